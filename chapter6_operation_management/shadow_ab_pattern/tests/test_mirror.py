"""The proxy's Mirror against a real upstream process (the core tests' upstream app): each copy's outcome counted,
the limit held, the request id carried."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from chapter6_operation_management.shadow_ab_pattern.proxy import Mirror, ProxySettings
from mlpatterns.client import Upstreams
from mlpatterns.logging import request_id
from mlpatterns.runner.backing import free_port
from mlpatterns.tests.upstream_apps import serve

OUTCOMES = ("mirrored", "failed", "dropped")


@pytest.fixture(scope="module")
def upstream():
    with serve("create_upstream_app") as server:
        yield server


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("shadow_mirror_requests_total", {"outcome": outcome}) or 0.0


def copies(url: str, paths: list[str], **settings) -> dict[str, float]:
    """Send a copy of GET <path> for each path, wait for all, and return how the counts moved."""

    async def main():
        before = {o: counted(o) for o in OUTCOMES}
        async with Upstreams({"shadow": url}) as upstreams:
            mirror = Mirror(upstreams["shadow"], ProxySettings(**settings))
            for path in paths:
                mirror.send("GET", path, {}, b"")
            await mirror.drain()
            assert not mirror.tasks
        return {o: counted(o) - before[o] for o in OUTCOMES}

    return asyncio.run(main())


def test_an_answer_is_mirrored_a_4xx_too(upstream):
    assert copies(upstream.url, ["/ok", "/missing"]) == {"mirrored": 2, "failed": 0, "dropped": 0}


def test_a_5xx_a_late_answer_and_no_answer_are_failed(upstream):
    assert copies(upstream.url, ["/fail", "/slow?seconds=5"], mirror_timeout_seconds=0.5)["failed"] == 2
    assert copies(f"http://127.0.0.1:{free_port()}", ["/ok"]) == {"mirrored": 0, "failed": 1, "dropped": 0}


def test_copies_past_the_limit_are_dropped_not_queued(upstream):
    moved = copies(upstream.url, ["/slow?seconds=0.5"] * 5, mirror_max_in_flight=2)
    assert moved == {"mirrored": 2, "failed": 0, "dropped": 3}


def test_no_copy_at_mirror_percent_0(upstream):
    assert copies(upstream.url, ["/ok"] * 20, mirror_percent=0) == {"mirrored": 0, "failed": 0, "dropped": 0}


def test_a_copy_carries_the_request_id_of_its_request(upstream):
    async def main():
        async with Upstreams({"shadow": upstream.url}) as upstreams:
            mirror = Mirror(upstreams["shadow"], ProxySettings())
            request_id.set("the-request-id")
            mirror.send("GET", "/echo", {}, b"")
            await mirror.drain()

    asyncio.run(main())
    assert "[the-request-id]: echo: the context's request id is the-request-id" in upstream.logs()
