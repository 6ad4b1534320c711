"""Deferred metric writes (`metrics.deferred`): the same figures as direct updates, written by the end of the loop's
round, and at once off a loop."""

import asyncio

from mlpatterns import metrics

# On and around the bucket bounds (observe() puts a value equal to a bound in that bucket), below the first and
# above the last.
AMOUNTS = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.005, 0.2, 2.5, 7.0, 10.0, 99.0]


def samples(metric) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in metric.collect() for s in f.samples}


def without_created(found: dict) -> dict:
    return {key: value for key, value in found.items() if not key[0].endswith("_created")}


def test_deferred_histogram_writes_what_observe_writes():
    direct = metrics.histogram("test_direct_seconds", "direct", ["stage"])
    late = metrics.histogram("test_deferred_seconds", "deferred", ["stage"])
    child = metrics.deferred(late.labels("model"))

    async def observe_all():
        for amount in AMOUNTS:
            child.observe(amount)
        # Nothing written yet: the loop's round has not ended.
        assert samples(late)[("test_deferred_seconds_count", (("stage", "model"),))] == 0
        await asyncio.sleep(0)

    for amount in AMOUNTS:
        direct.labels("model").observe(amount)
    asyncio.run(observe_all())
    renamed = {(name.replace("test_deferred", "test_direct"), labels): v for (name, labels), v in samples(late).items()}
    assert without_created(renamed) == without_created(samples(direct))
    assert samples(late)[("test_deferred_seconds_count", (("stage", "model"),))] == len(AMOUNTS)


def test_deferred_counter_sums_and_writes_at_once_off_a_loop():
    counter = metrics.counter("test_deferred_total", "deferred", ["status"])
    child = metrics.deferred(counter.labels("200"))
    child.inc()  # no event loop here: written at once
    assert samples(counter)[("test_deferred_total", (("status", "200"),))] == 1

    async def count():
        for _ in range(5):
            child.inc()
        child.inc(2.5)
        assert samples(counter)[("test_deferred_total", (("status", "200"),))] == 1
        await asyncio.sleep(0)
        assert samples(counter)[("test_deferred_total", (("status", "200"),))] == 8.5

    asyncio.run(count())


def test_exposition_writes_what_is_pending_first():
    counter = metrics.counter("test_scraped_total", "deferred")
    child = metrics.deferred(counter)  # a metric without labels is its own child

    async def count_then_scrape():
        child.inc(3)
        return metrics.exposition().decode()

    assert "test_scraped_total 3.0" in asyncio.run(count_then_scrape())


def test_updates_left_by_a_closed_loop_are_written_by_the_next():
    counter = metrics.counter("test_orphan_total", "deferred")
    child = metrics.deferred(counter)  # a metric without labels is its own child
    loop = asyncio.new_event_loop()

    async def count_and_leave():
        child.inc()

    loop.create_task(count_and_leave())
    loop.call_soon(loop.stop)  # the loop stops in the round of the update, before the write it scheduled
    loop.run_forever()
    loop.close()
    assert samples(counter).get(("test_orphan_total", ()), 0) == 0

    async def count_again():
        child.inc()
        await asyncio.sleep(0)

    asyncio.run(count_again())
    assert samples(counter)[("test_orphan_total", ())] == 2
