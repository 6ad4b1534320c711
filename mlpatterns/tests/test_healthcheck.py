import pytest

from mlpatterns.healthcheck import check_url, heartbeat_fresh


def test_a_path_is_asked_on_the_port_the_service_was_given():
    assert check_url("/health", {"PORT": "18555"}) == "http://127.0.0.1:18555/health"
    assert check_url("/v0.1/health", {}) == "http://127.0.0.1:8000/v0.1/health"


def test_a_url_is_asked_as_it_is():
    assert check_url("http://127.0.0.1:8080/health", {"PORT": "1"}) == "http://127.0.0.1:8080/health"


def test_anything_else_is_refused():
    with pytest.raises(ValueError, match="expected a path"):
        check_url("health", {})


def test_heartbeat_is_fresh_until_its_maximum_age(tmp_path):
    beat = tmp_path / "worker.heartbeat"
    environ = {"HEARTBEAT_PATH": str(beat), "HEARTBEAT_MAX_AGE_SECONDS": "5"}
    assert not heartbeat_fresh(environ)  # never touched: the worker has not joined its queue
    beat.touch()
    touched = beat.stat().st_mtime
    assert heartbeat_fresh(environ, now=touched + 4.9)
    assert not heartbeat_fresh(environ, now=touched + 5.1)
    assert heartbeat_fresh({"HEARTBEAT_PATH": str(beat)}, now=touched + 59)  # the default: 60 s
    with pytest.raises(ValueError, match="HEARTBEAT_PATH is not set"):
        heartbeat_fresh({})
