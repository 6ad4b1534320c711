"""`python -m mlpatterns.bench.hop` at its smallest: it runs, measures every client and reports each one."""

import re

from mlpatterns.bench import hop


def test_the_hop_bench_measures_every_client_at_each_concurrency(monkeypatch):
    reports = []
    monkeypatch.setattr(hop, "save_report", lambda name, report: reports.append((name, report)))
    monkeypatch.setattr(hop, "stop_on_signals", lambda: None)  # the test process keeps its own signal handlers
    assert hop.main(["--seconds", "1", "--rounds", "1", "--warmup", "0"]) == 0
    [(name, report)] = reports
    assert name == "hop"
    for label in hop.CLIENTS:
        for concurrency in hop.CONCURRENCIES:
            row = rf"^\| {re.escape(label)} \| {concurrency} \| ([\d,]+) \| [\d.]+ ms \| [\d,]+ µs \|$"
            found = re.search(row, report, re.M)
            assert found, f"no row for {label} at {concurrency}:\n{report}"
            assert int(found[1].replace(",", "")) > 0  # calls/s: the client's calls were answered
    assert re.search(r"^- c=32: Upstream.post costs [\d.]+x the floor's CPU per call", report, re.M)
