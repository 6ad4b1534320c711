"""The fan-out proxies' shared core (mlpatterns/serving/fan_out.py): finding the backends, and what a request is
when none answers. The parallel calls, the per-backend budget and partial answers are proved end to end by the two
patterns that use it (chapter 4's microservice horizontal, chapter 6's parameter-based)."""

import asyncio

import pytest

from mlpatterns.client import UpstreamRefused
from mlpatterns.errors import BadGateway, GatewayTimeout, InvalidInput, Unavailable
from mlpatterns.serving.fan_out import discover_backends, fan_out


def test_backends_are_the_service_variables_in_name_order():
    environ = {"SERVICE_VIRGINICA": "virginica:8000", "SERVICE_SETOSA": "http://setosa:8000", "SERVICE_": "x:1"}
    environ |= {"SERVICE_EMPTY": "", "OTHER": "http://other:8000"}
    assert discover_backends(environ) == {"setosa": "http://setosa:8000", "virginica": "http://virginica:8000"}


def test_no_backend_is_an_error_naming_the_variables():
    with pytest.raises(RuntimeError, match=r"no backend: set one SERVICE_<NAME>=<url> variable per backend"):
        discover_backends({"PORT": "9000"})


class Named:
    def __init__(self, name: str):
        self.name = name


def failing(errors: dict):
    async def call(upstream):
        raise errors[upstream.name]

    return call


def test_each_failure_is_its_backends_reply_and_none_answering_is_an_error():
    names = {name: Named(name) for name in ("a", "b")}

    async def one_answers(upstream):
        if upstream.name == "a":
            return {"prediction": [[0.1, 0.9]]}
        raise GatewayTimeout("upstream 'b' did not answer within 2.0 s")

    replies = asyncio.run(fan_out(names, one_answers))
    assert replies["a"].ok and replies["a"].part()["prediction"] == [[0.1, 0.9]]
    assert replies["b"].part() == {"status": 504, "seconds": pytest.approx(0, abs=1), "detail": replies["b"].detail}

    down = {"a": Unavailable("upstream 'a' is unavailable"), "b": BadGateway("upstream 'b' answered 500")}
    with pytest.raises(
        Unavailable, match="no backend answered: upstream 'a' is unavailable; upstream 'b' answered 500"
    ):
        asyncio.run(fan_out(names, failing(down)))
    refused = {"a": InvalidInput("each row must have shape 4"), "b": Unavailable("upstream 'b' is unavailable")}
    with pytest.raises(UpstreamRefused) as failure:  # the input is wrong: said as the backend said it
        asyncio.run(fan_out(names, failing(refused)))
    assert failure.value.status_code == 422 and "each row must have shape 4" in str(failure.value.detail)
