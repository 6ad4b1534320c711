"""The client for calls between services, against real processes: a live upstream and a dead port."""

import asyncio
import re
import time
import uuid

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from mlpatterns.client import UpstreamRefused, Upstreams, UpstreamsDep, UpstreamSettings
from mlpatterns.errors import BadGateway, GatewayTimeout, PatternError, Unavailable
from mlpatterns.logging import request_id
from mlpatterns.runner.backing import free_port
from mlpatterns.serving.service import create_service_app
from mlpatterns.settings import HttpServiceSettings
from mlpatterns.tests.upstream_apps import serve

SETTINGS = UpstreamSettings(upstream_connect_timeout=1.0, upstream_read_timeout=1.0)


@pytest.fixture(scope="module")
def upstream():
    with serve("create_upstream_app") as server:
        yield server


@pytest.fixture(scope="module")
def dead_url():
    return f"http://127.0.0.1:{free_port()}"  # bound, then closed: nothing listens there


def call(urls: dict[str, str], name: str, method: str, path: str, rid: str | None = None, **kwargs):
    """One call as a route makes it: in an event loop, with the request id of the request being handled."""

    async def main():
        if rid:
            request_id.set(rid)
        async with Upstreams(urls, SETTINGS) as upstreams:
            return await getattr(upstreams[name], method)(path, **kwargs)

    return asyncio.run(main())


def test_a_2xx_gives_the_upstreams_json(upstream):
    assert call({"upstream": upstream.url}, "upstream", "get", "/ok") == {"ok": True}


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_dead_upstream_is_503_within_the_connect_timeout(dead_url, method):
    start = time.monotonic()
    with pytest.raises(Unavailable, match=r"^upstream 'prediction' is unavailable \(.+\)$"):
        call({"prediction": dead_url}, "prediction", method, "/predict")
    assert time.monotonic() - start < SETTINGS.upstream_connect_timeout + 1  # a bound on behaviour, GET retries too


def test_a_slow_upstream_is_504_within_the_read_timeout(upstream):
    start = time.monotonic()
    with pytest.raises(GatewayTimeout) as refused:
        call({"upstream": upstream.url}, "upstream", "post", "/slow", params={"seconds": 5})
    assert refused.value.detail == "upstream 'upstream' did not answer within 1.0 s"
    assert time.monotonic() - start < SETTINGS.upstream_read_timeout + 1


def test_a_call_timeout_bounds_the_whole_call_retries_included(upstream):
    start = time.monotonic()
    with pytest.raises(GatewayTimeout) as refused:
        call({"upstream": upstream.url}, "upstream", "get", "/slow", params={"seconds": 5}, timeout=0.5)
    assert refused.value.detail == "upstream 'upstream' did not answer within 0.5 s"
    assert time.monotonic() - start < 1.5


def test_a_5xx_is_502_naming_the_upstream_and_its_detail(upstream):
    with pytest.raises(BadGateway) as refused:
        call({"prediction": upstream.url}, "prediction", "get", "/fail")
    assert refused.value.detail == "upstream 'prediction' answered 500: the model exploded"


def test_a_4xx_is_passed_on_with_its_status_and_detail(upstream):
    with pytest.raises(UpstreamRefused) as refused:
        call({"upstream": upstream.url}, "upstream", "get", "/missing")
    assert (refused.value.status_code, refused.value.detail) == (404, "no such model")


def test_any_status_gives_the_upstreams_answer_as_it_is_and_no_answer_still_raises(upstream, dead_url):
    """What a proxy that passes answers on needs: every status and body unchanged; 503/504 only for no answer."""

    def forward(url: str, method: str, path: str, **kwargs) -> httpx.Response:
        async def main():
            async with Upstreams({"upstream": url}, SETTINGS) as upstreams:
                return await upstreams["upstream"].request(method, path, any_status=True, **kwargs)

        return asyncio.run(main())

    for path, status, body in [
        ("/ok", 200, {"ok": True}),
        ("/missing", 404, {"detail": "no such model"}),
        ("/fail", 500, {"detail": "the model exploded"}),
    ]:
        response = forward(upstream.url, "GET", path)
        assert (response.status_code, response.json()) == (status, body)
    with pytest.raises(Unavailable):
        forward(dead_url, "POST", "/predict")
    with pytest.raises(GatewayTimeout):
        forward(upstream.url, "POST", "/slow", params={"seconds": 5})


class Prediction(BaseModel):
    prediction: list[float]


def test_an_answer_that_is_not_the_json_expected_is_502(upstream):
    with pytest.raises(BadGateway) as refused:
        call({"upstream": upstream.url}, "upstream", "get", "/notjson")
    assert refused.value.detail == "upstream 'upstream' answered 200 with a body that is not JSON: 'hello'"
    with pytest.raises(BadGateway) as refused:
        call({"upstream": upstream.url}, "upstream", "get", "/ok", model=Prediction)
    assert (
        refused.value.detail == "upstream 'upstream' answered 200 with an unexpected body: prediction: Field required"
    )


def test_a_body_goes_with_the_type_its_caller_gave_never_a_guessed_one(upstream):
    """What a proxy passing requests on needs: a body without a Content-Type arrives without one."""

    def received(**kwargs) -> dict:
        return call({"upstream": upstream.url}, "upstream", "post", "/received", **kwargs)

    assert received(json={"a": 1}) == {"content-type": "application/json", "body": '{"a":1}'}
    assert received(content=b"a,b", headers={"content-type": "text/csv"}) == {"content-type": "text/csv", "body": "a,b"}
    assert received(content=b"raw") == {"content-type": None, "body": "raw"}


def test_a_cookie_an_upstream_sets_is_never_sent_back(upstream):
    """One session serves every request a worker relays: a cookie kept from one client's answer would go out with
    other clients' requests (aiohttp's default jar keeps cookies of host names, such as compose's service names)."""

    async def main():
        async with Upstreams({"upstream": upstream.url.replace("127.0.0.1", "localhost")}, SETTINGS) as upstreams:
            assert (await upstreams["upstream"].get("/cookie/set")) == {"set": True}
            return await upstreams["upstream"].get("/cookie")

    assert asyncio.run(main()) == {"cookie": None}


def calls(upstream, key: str) -> int:
    return httpx.get(f"{upstream.url}/calls/{key}").json()["calls"]


def test_a_get_is_retried_on_503_until_it_succeeds(upstream):
    key = uuid.uuid4().hex
    assert call({"upstream": upstream.url}, "upstream", "get", f"/flaky/{key}", params={"failures": 2}) == {"calls": 3}


def test_retries_are_bounded(upstream):
    key = uuid.uuid4().hex
    with pytest.raises(BadGateway, match="^upstream 'upstream' answered 503: warming up$"):
        call({"upstream": upstream.url}, "upstream", "get", f"/flaky/{key}", params={"failures": 100})
    assert calls(upstream, key) == SETTINGS.upstream_retry_attempts


def test_a_post_is_sent_once_unless_marked_idempotent(upstream):
    key = uuid.uuid4().hex
    with pytest.raises(BadGateway, match="answered 503"):
        call({"upstream": upstream.url}, "upstream", "post", f"/flaky/{key}", params={"failures": 1})
    assert calls(upstream, key) == 1
    key = uuid.uuid4().hex
    answer = call(
        {"upstream": upstream.url}, "upstream", "post", f"/flaky/{key}", params={"failures": 1}, idempotent=True
    )
    assert answer == {"calls": 2}


def test_every_call_carries_the_request_id_of_its_context(upstream):
    answer = call({"upstream": upstream.url}, "upstream", "get", "/echo", rid="rid-from-the-caller")
    assert answer == {"request_id": "rid-from-the-caller"}
    # Outside a request (a script, a job without one) each call still carries an id.
    assert re.fullmatch("[0-9a-f]{32}", call({"upstream": upstream.url}, "upstream", "get", "/echo")["request_id"])


def test_a_service_passes_its_request_id_on_and_both_processes_log_it(upstream, dead_url):
    with serve("create_caller_app", env={"UPSTREAM_URL": upstream.url, "DEAD_URL": dead_url}) as caller:
        rid = f"e2e-{uuid.uuid4().hex}"
        response = httpx.get(caller.url + "/relay", headers={"X-Request-ID": rid})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == rid
        assert response.json() == {"request_id": rid, "lifespan_ran": True}

        start = time.monotonic()
        dead = httpx.get(caller.url + "/relay/dead", headers={"X-Request-ID": rid + "-dead"})
        assert time.monotonic() - start < SETTINGS.upstream_connect_timeout + 1
        assert dead.status_code == 503
        assert dead.json()["detail"].startswith("upstream 'prediction' is unavailable (")
        assert dead.headers["x-request-id"] == rid + "-dead"

        deadline = time.monotonic() + 5  # the lines are written before the answers, but give the pipes a moment
        while f"[{rid}-dead]" not in caller.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"[{rid}]: relay: calling upstream" in caller.logs()
        assert f"[{rid}-dead]: GET /relay/dead -> 503: upstream 'prediction' is unavailable" in caller.logs()
        assert f"[{rid}]: echo: the context's request id is {rid}" in upstream.logs()


def test_the_client_opens_and_closes_with_the_apps_lifespan_around_the_services_own():
    events = []

    def lifespan(app: FastAPI):
        class Lifespan:
            async def __aenter__(self):
                events.append("service started")
                return {"ready": True}

            async def __aexit__(self, *exc_info):
                events.append("service stopped")

        return Lifespan()

    def add_routes(router: APIRouter) -> None:
        @router.get("/upstreams")
        async def names(upstreams: UpstreamsDep, request: Request):
            return {"upstreams": list(upstreams), "ready": request.state.ready}

    app = create_service_app(
        HttpServiceSettings(), add_routes, upstreams={"prediction": "http://127.0.0.1:1"}, lifespan=lifespan
    )
    with TestClient(app) as client:
        upstreams = app.state.upstreams
        assert not upstreams.closed
        assert events == ["service started"]
        assert client.get("/upstreams").json() == {"upstreams": ["prediction"], "ready": True}
    assert upstreams.closed
    assert events == ["service started", "service stopped"]


def test_a_service_without_upstreams_has_no_client():
    app = create_service_app(HttpServiceSettings(), lambda router: None)
    with TestClient(app):
        assert not hasattr(app.state, "upstreams")


def test_a_fan_out_names_the_dead_and_the_slow_backend_and_waits_for_neither(upstream, dead_url):
    urls = {"fast": upstream.url + "/ok", "slow": upstream.url + "/slow?seconds=5", "dead": dead_url}

    async def fan_out():
        async with Upstreams(urls, SETTINGS) as upstreams:

            async def call(name: str):
                try:
                    return await upstreams[name].get("", timeout=0.5)
                except PatternError as failure:
                    return failure.status_code, failure.detail

            return dict(zip(urls, await asyncio.gather(*(call(name) for name in urls)), strict=True))

    start = time.monotonic()
    answers = asyncio.run(fan_out())
    assert time.monotonic() - start < 1.5
    assert answers["fast"] == {"ok": True}
    assert answers["slow"] == (504, "upstream 'slow' did not answer within 0.5 s")
    assert answers["dead"][0] == 503 and answers["dead"][1].startswith("upstream 'dead' is unavailable (")
