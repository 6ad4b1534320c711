"""`python -m mlpatterns.bench.peers`: ours beside MLServer, BentoML and Ray Serve, on the same model, in one run.

1. Each peer asked for (--peers) gets its venv under build/peers/ (venvs.py): installed from PyPI on first use,
   which needs the network; a peer that will not install is reported and skipped. The patterns themselves never
   download anything.
2. Ours (web_single, started by the local runner), the FastAPI JSON echo floor and each peer are started on
   free ports with 2 workers (replicas) each, every peer with its documented fastest settings (the report lists
   them). A peer that will not start is reported and skipped too.
3. Every server is asked for the sample row and a 100-row batch of iris rows, each in its own request format,
   and must answer our probabilities to 1e-6: any difference stops the bench before a figure is taken.
4. wrk loads each server in turn, one row and then 100 rows a request, at 1 and 32 connections, round after
   round (the core's `measure`), so a slow spell of a shared machine hits all alike.
5. The table goes to build/bench/peers.md, with our req/s over the best peer's at 32 connections, and the server
   CPU a request costs the leanest peer over ours (on a busy shared machine, the figure to read).
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import yaml
from sklearn.datasets import load_iris

from mlpatterns.bench.peers import PEERS, Peer, data_request, prediction_of
from mlpatterns.bench.peers.venvs import PeerUnavailable, ensure_venv, requirements
from mlpatterns.bench.run import (
    CONCURRENCIES,
    ECHO,
    Target,
    _cpu_model,
    bench_command,
    figures_table,
    measure,
    save_report,
)
from mlpatterns.bench.wrk import ensure_wrk
from mlpatterns.runner.backing import free_port
from mlpatterns.runner.run import RunnerError, run_pattern
from mlpatterns.settings import IRIS_SAMPLE

WEB_SINGLE = "chapter4_serving_patterns/web_single_pattern"
MODEL_PATH = "models/iris_svc/model.onnx"  # web_single's
WORKERS = 2  # as web_single's compose file runs it
BATCH_ROWS = 100
TOLERANCE = 1e-6
READY_TIMEOUT = 300.0  # seconds for a peer to serve: Ray starts a cluster


class AnswerMismatch(RuntimeError):
    pass


@dataclass
class Server:
    """One server of the comparison: where it takes a batch, and how it wants it and answers it."""

    label: str
    url: str  # the full predict URL
    pgid: int  # for its CPU time
    encode: Callable[[list[list[float]]], dict]
    decode: Callable[[dict], np.ndarray] | None  # None: not a model (the echo floor)


def parse_peers(text: str) -> list[str]:
    """`mlserver,bentoml,ray` (any order, any subset) -> the names, each once, in the given order."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'nothing'}: name one or more of {', '.join(PEERS)}, separated by commas"
        )
    return list(dict.fromkeys(names))


def batch_rows() -> list[list[float]]:
    """100 iris rows of all three classes, the same every run."""
    features = load_iris().data
    picked = np.random.default_rng(0).choice(len(features), size=BATCH_ROWS, replace=False)
    return features[picked].tolist()


def compare(label: str, rows: list[list[float]], ours: np.ndarray, theirs: np.ndarray) -> None:
    """Raise AnswerMismatch unless `theirs` holds our probabilities, row by row, to TOLERANCE."""
    if theirs.shape != ours.shape:
        raise AnswerMismatch(
            f"{label} answered probabilities of shape {theirs.shape} for {len(rows)} rows, ours {ours.shape}"
        )
    worst = np.abs(theirs - ours).max(axis=1)
    if worst.max() > TOLERANCE:
        row = int(worst.argmax())
        raise AnswerMismatch(
            f"{label} answers {theirs[row].tolist()} for row {rows[row]}, ours {ours[row].tolist()} "
            f"(a difference of {worst[row]:.2g}, more than {TOLERANCE:g}): the servers do not run the same model, "
            "so their speeds cannot be compared"
        )


def check_answers(servers: list[Server], batches: list[list[list[float]]]) -> None:
    """Every model server answers the first one's (ours) probabilities for each batch, or AnswerMismatch."""
    ours, *others = servers
    for rows in batches:
        expected = ask(ours, rows)
        for server in others:
            if server.decode is not None:
                compare(server.label, rows, expected, ask(server, rows))


def ask(server: Server, rows: list[list[float]]) -> np.ndarray:
    response = httpx.post(server.url, json=server.encode(rows), timeout=30)
    if response.status_code != 200:
        raise AnswerMismatch(f"{server.label} answered {response.status_code} to {len(rows)} rows: {response.text}")
    return server.decode(response.json())


def start_peer(stack: ExitStack, peer: Peer, python: Path) -> Server:
    """Start the peer through the local runner (its process group, the watchdog, the stop) from a compose file
    of one service, and wait until it serves; PeerUnavailable (and nothing left running) if it does not."""
    port = free_port()
    service = {
        "command": [str(python), str(peer.server_file)],
        "environment": {"HOST": "127.0.0.1", "PORT": str(port), "MODEL_PATH": MODEL_PATH, "WORKERS": str(WORKERS)},
    }
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"peer-{peer.name}-"))
    (Path(folder) / "docker-compose.yml").write_text(yaml.safe_dump({"services": {peer.name: service}}))
    own = ExitStack()  # this peer's run alone: closed at once if it fails, else with the others
    try:
        run = own.enter_context(run_pattern(folder, free_ports=True))
        wait_ready(run, peer, f"http://127.0.0.1:{port}{peer.ready_path}")
    except BaseException as error:  # a Ctrl-C while it starts stops it too
        try:
            own.close()
        except RunnerError:
            pass  # the exit it reports is the error already in hand
        if isinstance(error, RunnerError | PeerUnavailable):
            raise PeerUnavailable(str(error)) from None
        raise
    stack.enter_context(own)
    return Server(
        peer.title,
        f"http://127.0.0.1:{port}{peer.predict_path}",
        run.processes(peer.name)[0].pid,
        peer.encode,
        peer.decode,
    )


def wait_ready(run, peer: Peer, url: str) -> None:
    started = time.monotonic()
    said = started
    while (waited := time.monotonic() - started) < READY_TIMEOUT:
        process = run.processes(peer.name)[0]
        if run.failed.is_set() or process.poll() is not None:
            raise PeerUnavailable(f"{peer.name} exited before it served:\n{run.logs(peer.name)}")
        try:
            if httpx.get(url, timeout=2).is_success:
                print(f"{peer.name}: serving after {waited:.0f} s", flush=True)
                return
        except httpx.TransportError:
            pass
        if time.monotonic() - said >= 10:
            print(f"{peer.name}: still starting ({waited:.0f} s)", flush=True)
            said = time.monotonic()
        time.sleep(0.5)
    raise PeerUnavailable(f"{peer.name} did not serve within {READY_TIMEOUT:.0f} s:\n{run.logs(peer.name)}")


def main(argv: list[str] | None = None) -> int:
    return bench_command(__doc__, argv, bench, options=peer_options)


def peer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peers",
        type=parse_peers,
        default=list(PEERS),
        help=f"which peers, separated by commas (default: {','.join(PEERS)}); the first run installs each from PyPI "
        "into build/peers/",
    )


def bench(args: argparse.Namespace) -> int:
    try:
        pythons, skipped = install(args.peers)
        with ExitStack() as stack:
            servers = start_servers(stack, pythons, skipped)
            if len(servers) == 2:
                print("no peer could be installed or started: nothing to compare with", file=sys.stderr)
                return 1
            print(f"checking that every server answers our probabilities (to {TOLERANCE:g})...", flush=True)
            batches = [IRIS_SAMPLE, batch_rows()]
            check_answers(servers, batches)
            targets = [
                Target(
                    f"{server.label}, {len(rows)} row{'s' if len(rows) > 1 else ''}",
                    server.url,
                    server.pgid,
                    body=orjson.dumps(server.encode(rows)),
                )
                for rows in batches
                for server in servers
            ]
            print(f"loading {len(servers)} servers, {args.rounds} rounds of {args.seconds:g} s", flush=True)
            figures = measure(targets, None, args.seconds, args.warmup, args.rounds)
    except AnswerMismatch as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the servers are stopped", file=sys.stderr)
        return 130
    save_report("peers", render(args, [s.label for s in servers], [t.label for t in targets], figures, skipped))
    failed = {key: f.errors for key, f in figures.items() if f.errors}
    for (label, connections), errors in failed.items():
        print(f"ERROR: {label} at c={connections}: {errors} non-2xx answers or socket errors", file=sys.stderr)
    return 1 if failed else 0


def install(names: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Each peer's Python, installing what is missing; ({name: python}, {name: why it is skipped})."""
    pythons, skipped = {}, {}
    for name in names:
        try:
            pythons[name] = ensure_venv(PEERS[name])
        except PeerUnavailable as error:
            print(f"SKIPPED {error}", file=sys.stderr)
            skipped[name] = str(error)
    return pythons, skipped


def start_servers(stack: ExitStack, pythons: dict[str, Path], skipped: dict[str, str]) -> list[Server]:
    """Ours, the echo floor, then every peer that starts (one that does not joins `skipped`), in that order."""
    print("starting ours (web_single) and the echo floor...", flush=True)
    ours = stack.enter_context(run_pattern(WEB_SINGLE, free_ports=True))
    echo = stack.enter_context(run_pattern(ECHO, overrides={"echo": {"WORKERS": str(WORKERS)}}))
    servers = [
        Server(
            "ours (web_single)",
            ours.url("web") + "/predict",
            ours.running["web"].process.pid,
            data_request,
            prediction_of,
        ),
        Server(
            "FastAPI JSON echo (floor)",
            echo.url("echo") + "/echo",
            echo.running["echo"].process.pid,
            data_request,
            None,
        ),
    ]
    for name, python in pythons.items():
        print(f"starting {name}...", flush=True)
        try:
            servers.append(start_peer(stack, PEERS[name], python))
        except PeerUnavailable as error:
            print(f"SKIPPED {error}", file=sys.stderr)
            skipped[name] = str(error)
    return servers


def ratios(servers: list[str], labels: list[str], figures: dict) -> list[str]:
    """Per batch size, at the most connections: our req/s over the best peer's and the echo's, and the server CPU
    a request costs the leanest peer over ours (the figure a busy shared machine disturbs least)."""
    high = max(CONCURRENCIES)
    ours, echo, *peers = servers
    lines = []
    for suffix in sorted({label.split(", ", 1)[1] for label in labels}, key=lambda s: int(s.split()[0])):
        at_high = {server: figures[f"{server}, {suffix}", high] for server in servers}
        best = max(peers, key=lambda peer: at_high[peer].rps)
        leanest = min(peers, key=lambda peer: at_high[peer].cpu_us_per_request)
        rps, cpu = at_high[ours].rps, at_high[ours].cpu_us_per_request
        lines.append(
            f"- {suffix} a request, {high} connections: ours {rps:,.0f} req/s, **{rps / at_high[best].rps:.1f}x** "
            f"the best peer's ({best}, {at_high[best].rps:,.0f}); {rps / at_high[echo].rps:.0%} of the echo floor's; "
            f"server CPU per request {cpu:,.0f} µs, the leanest peer's {at_high[leanest].cpu_us_per_request:,.0f} µs "
            f"({leanest}, **{at_high[leanest].cpu_us_per_request / cpu:.1f}x** ours)"
        )
    return lines


def render(args, servers: list[str], labels: list[str], figures: dict, skipped: dict[str, str]) -> str:
    command = (
        "make bench-peers"
        if os.environ.get("MAKELEVEL")
        else shlex.join(["python", "-m", "mlpatterns.bench.peers", *sys.argv[1:]])
    )
    wrk_version = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    other = max(f.other_cpu for f in figures.values())
    by_title = {peer.title: peer for peer in PEERS.values()}
    lines = [
        "## Benchmark: ours beside MLServer, BentoML and Ray Serve",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {_cpu_model()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- model: {MODEL_PATH} (the iris SVC), onnxruntime in every server, one thread per call",
        f'- ours: web_single, gunicorn + uvicorn workers, {WORKERS} workers; POST /predict `{{"data": [[...]]}}`',
        *(
            f"- {title}: {by_title[title].settings}; POST {by_title[title].predict_path}; "
            f"own venv: {', '.join(requirements(by_title[title]))}"
            for title in servers[2:]
        ),
        *(f"- {name}: not measured: {reason.splitlines()[0]}" for name, reason in skipped.items()),
        f"- answers: every server's probabilities equal ours to {TOLERANCE:g} for the sample row and the "
        f"{BATCH_ROWS}-row batch",
        f"- load: {wrk_version}, 1 thread, loopback; one row, and {BATCH_ROWS} iris rows a request, in each "
        f"server's own format; each figure is the median of {args.rounds} runs of {args.seconds:g} s, the servers "
        f"loaded in turn, after a {args.warmup:g} s warm-up each",
        f"- other processes used up to {other:.0%} of the machine's CPU during a run"
        + (
            " (WARNING: a busy machine; run again when it is quiet. Meanwhile read the server CPU per request: "
            "req/s then favours the server with more threads and processes, among which the kernel shares the CPU)"
            if other > 0.10
            else ""
        ),
        "",
        *figures_table(labels, figures),
        "",
        *ratios(servers, labels, figures),
        "",
    ]
    return "\n".join(lines)
