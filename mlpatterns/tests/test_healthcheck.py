import pytest

from mlpatterns.healthcheck import check_url


def test_a_path_is_asked_on_the_port_the_service_was_given():
    assert check_url("/health", {"PORT": "18555"}) == "http://127.0.0.1:18555/health"
    assert check_url("/v0.1/health", {}) == "http://127.0.0.1:8000/v0.1/health"


def test_a_url_is_asked_as_it_is():
    assert check_url("http://127.0.0.1:8080/health", {"PORT": "1"}) == "http://127.0.0.1:8080/health"


def test_anything_else_is_refused():
    with pytest.raises(ValueError, match="expected a path"):
        check_url("health", {})
