"""Command line of the local runner (the Makefile's `up` and `demo` call it).

python -m mlpatterns.runner up chapter4_serving_patterns/web_single_pattern [--free-ports]
python -m mlpatterns.runner demo [PATTERN ...]     # no pattern: every pattern that has a demo.py

`up` runs until SIGINT (Ctrl-C), SIGTERM or SIGHUP (a closed terminal), then stops everything it started and
exits 0; if a service exits and its restart policy stops the pattern (see mlpatterns/runner/run.py), it stops
everything and exits 1. `demo` stops on the same signals.
"""

import argparse
import contextlib
import importlib
import sys
from pathlib import Path

from mlpatterns.demo import DemoClient
from mlpatterns.runner.run import REPO_ROOT, RunnerError, StopRequested, pattern_dirs, run_pattern, stop_on_signals


def _module_name(pattern_dir: Path) -> str:
    return ".".join(pattern_dir.resolve().relative_to(REPO_ROOT).parts)


def up(pattern: Path, free_ports: bool) -> int:
    with run_pattern(pattern, free_ports=free_ports, echo=True) as run:
        for name, running in run.running.items():
            if running.port and running.process:
                print(f"{name:>10} | ready at {run.url(name)}  (API docs: {run.url(name)}/docs)", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            run.wait()  # until the supervisor stops the pattern: run_pattern then raises RunnerError
        except StopRequested as stop:
            with contextlib.suppress(OSError):  # a closed terminal
                print(f"\n{stop}: stopping...", flush=True)
    return 0


def demo(patterns: list[Path]) -> int:
    summaries, failed = [], []
    for pattern in patterns:
        if not (pattern / "demo.py").is_file():
            raise RunnerError(f"{pattern} is not a pattern directory with a demo.py")
    for pattern in patterns:
        name = str(pattern.resolve().relative_to(REPO_ROOT))
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(_module_name(pattern) + ".demo")
        with run_pattern(pattern, free_ports=True, echo=False) as run:
            urls = {name: run.url(name) for name, r in run.running.items() if r.port and r.process}
            client = DemoClient(urls, logs=run.logs)
            try:
                module.demo(client)
            finally:
                client.close()
        summaries.append(f"  {name}: {client.summary()}")
        if client.unexpected:
            failed.append(name)
    print("\n=== summary ===\n" + "\n".join(summaries), flush=True)
    if failed:
        print(f"demo failed: unexpected answers in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlpatterns.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start a pattern and keep it running until Ctrl-C")
    up_parser.add_argument("pattern", type=Path)
    up_parser.add_argument("--free-ports", action="store_true", help="listen on free ports, not the compose ones")
    demo_parser = commands.add_parser("demo", help="start each pattern, send its example requests, stop it")
    demo_parser.add_argument("patterns", type=Path, nargs="*")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        if args.command == "up":
            return up(args.pattern, args.free_ports)
        patterns = args.patterns or [p for p in pattern_dirs() if (p / "demo.py").exists()]
        return demo(patterns)
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except StopRequested as stop:  # during a start or a demo: everything started is stopped by now
        print(f"\n{stop}: stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
