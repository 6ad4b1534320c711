"""`python -m mlpatterns.bench.batching`: the digits CNN served with and without micro-batching, in one run.

1. the cheapest request the CNN's services take: one image as its raw float32 tensor (12,288 bytes, no JSON, no
   image decoding) POSTed to the tensor service (`mlpatterns/bench/tensor_service`), started three times by the
   local runner: unbatched, batched adaptive, batched with a fixed wait (BATCH_ADAPTIVE=false);
2. the synchronous pattern's own request, one base64 PNG digit in TF Serving's row format, unbatched and batched
   (adaptive): decoding the PNG costs several times the model call, and batching cannot share it;
3. in process, for scale: onnxruntime on one image and on a 1000-image batch (per image), the most batching can
   save on the model's side.
Each served figure is the median of --rounds wrk runs at 1 and 64 connections, the servers loaded in turn; then
the requests per model call that each batched server counted (`model_batch_requests`). Prints a table and the
ratios that matter, and writes them to build/bench/batching.md.
"""

import argparse
import os
import platform
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson

from mlpatterns.bench.run import Target, bench_command, figures_table, measure, model_floor, save_report, shown
from mlpatterns.demo import metric_sum
from mlpatterns.images import sample_digits
from mlpatterns.runner.run import REPO_ROOT, RunnerError, run_pattern
from mlpatterns.tensors import DTYPE_HEADER, MEDIA_TYPE, SHAPE_HEADER

TENSOR_SERVICE = Path(__file__).parent / "tensor_service"  # its docker-compose.yml: service `pred`
SYNCHRONOUS = REPO_ROOT / "chapter4_serving_patterns" / "synchronous_pattern"
MODEL = Path("models/cifar10/model.onnx")
CONCURRENCIES = (1, 64)
# One image whose float32 bytes are all "A" (each pixel 12.08): wrk carries its body in an environment variable,
# which holds text only. The CNN's work does not depend on the pixels.
TENSOR = b"A" * (3 * 32 * 32 * 4)
TENSOR_HEADERS = {"Content-Type": MEDIA_TYPE, SHAPE_HEADER: "1,3,32,32", DTYPE_HEADER: "float32"}


def variants(wait_ms: float, max_items: int) -> dict[str, dict[str, str]]:
    """Label -> the batching settings of a server."""
    on = {"BATCH_MAX_WAIT_MS": f"{wait_ms:g}", "BATCH_MAX_ITEMS": str(max_items)}
    return {
        "unbatched": {"BATCH_MAX_WAIT_MS": "0"},
        f"batched, adaptive (wait <= {wait_ms:g} ms)": on | {"BATCH_ADAPTIVE": "true"},
        f"batched, fixed wait {wait_ms:g} ms": on | {"BATCH_ADAPTIVE": "false"},
    }


def serve(stack: ExitStack, label: str, pattern: Path, service: str, path: str, settings: dict, headers=None) -> Target:
    """Start the pattern with the service's settings overridden, until the stack closes: the service's Target."""
    run = stack.enter_context(run_pattern(pattern, free_ports=True, overrides={service: settings}))
    return Target(label, run.url(service) + path, run.running[service].process.pid, headers)


def requests_per_call(target: Target) -> float:
    """The mean requests a model call answered on this server, from its /metrics (0: no batcher)."""
    base = target.url.split("/", 3)[:3]
    text = httpx.get("/".join(base) + "/metrics", timeout=10).text
    calls = metric_sum(text, "model_batch_requests_count")
    return metric_sum(text, "model_batch_requests_sum") / calls if calls else 0.0


def bench(args: argparse.Namespace) -> int:
    workers = {"WORKERS": str(args.workers)}
    tensor_variants = variants(args.wait_ms, args.max_items)
    png_variants = dict(list(tensor_variants.items())[:2])  # unbatched, adaptive
    png = orjson.dumps({"instances": [sample_digits()["0"]]})
    print(f"starting {len(tensor_variants) + len(png_variants)} servers of {args.workers} workers...", flush=True)
    with ExitStack() as stack:
        tensor_targets = [
            serve(stack, f"tensor, {label}", TENSOR_SERVICE, "pred", "/predict", workers | settings, TENSOR_HEADERS)
            for label, settings in tensor_variants.items()
        ]
        png_targets = [
            serve(stack, f"PNG, {label}", SYNCHRONOUS, "serving", "/v1/models/digits:predict", workers | settings)
            for label, settings in png_variants.items()
        ]
        for target, body in [(tensor_targets[0], TENSOR), (png_targets[0], png)]:
            headers = target.headers or {"Content-Type": "application/json"}
            answer = httpx.post(target.url, content=body, headers=headers, timeout=10)
            if answer.status_code != 200:
                raise RunnerError(f"{target.url}: {answer.status_code} {answer.text[:200]}")
        print(f"tensor form: {args.rounds} rounds of {args.seconds:g} s at {CONCURRENCIES} connections", flush=True)
        figures = measure(tensor_targets, TENSOR, args.seconds, args.warmup, args.rounds, CONCURRENCIES)
        print("PNG form (synchronous pattern)...", flush=True)
        figures |= measure(png_targets, png, args.seconds, args.warmup, args.rounds, CONCURRENCIES)
        per_call = {t.label: requests_per_call(t) for t in tensor_targets + png_targets}
    print(f"model floor: {MODEL} in process...", flush=True)
    one_per_s, batch_per_s = model_floor(MODEL, [[[[12.0] * 32] * 32] * 3], min(args.seconds, 2.0))
    labels = [t.label for t in tensor_targets + png_targets]
    report = render(args, labels, figures, per_call, 1e6 / one_per_s, 1e6 / batch_per_s, png)
    save_report("batching", report)
    errors = sum(f.errors for f in figures.values())
    if errors:
        print(f"ERROR: {errors} non-2xx answers or socket errors", file=sys.stderr)
    return 1 if errors else 0


def render(args, labels: list[str], figures: dict, per_call: dict, one_us: float, batched_us: float, png) -> str:
    low, high = CONCURRENCIES
    off, adaptive, fixed, png_off, png_on = labels

    def versus(on: str, base: str) -> str:
        a, b = figures[on, high], figures[base, high]
        return (
            f"req/s at c={high} {a.rps / b.rps:.2f}x, p99 at c={high} {a.p99_ms / b.p99_ms:.2f}x, "
            f"p50 at c={low} {figures[on, low].p50_ms / figures[base, low].p50_ms:.2f}x, "
            f"server CPU per request at c={high} {a.cpu_us_per_request / b.cpu_us_per_request:.2f}x the unbatched; "
            f"{per_call[on]:.1f} requests per model call"
        )

    other = max(f.other_cpu for f in figures.values())
    return "\n".join(
        [
            "## Benchmark: micro-batching (mlpatterns.batching), the digits CNN",
            "",
            f"- command: `{shlex.join(['python', '-m', 'mlpatterns.bench.batching', *sys.argv[1:]])}`",
            f"- machine: nproc {len(os.sched_getaffinity(0))}, Linux {platform.release()}, "
            f"Python {platform.python_version()}; each server {args.workers} gunicorn workers; "
            f"batched: BATCH_MAX_WAIT_MS={args.wait_ms:g}, BATCH_MAX_ITEMS={args.max_items}",
            f"- load: wrk, 1 thread; tensor body {len(TENSOR):,} bytes (application/octet-stream, 1x3x32x32 float32); "
            f"PNG body `{shown(png)}`; each figure the median of {args.rounds} runs of {args.seconds:g} s, "
            "the servers loaded in turn",
            f"- other processes used up to {other:.0%} of the machine's CPU during a run"
            + (
                " (WARNING: a busy machine. A server then gets CPU time in the measure of its runnable threads, and "
                "its req/s follows the share it gets, not its cost: compare the server CPU per request, which is what "
                "req/s follows on a machine of its own)"
                if other > 0.10
                else ""
            ),
            "",
            *figures_table(labels, figures, CONCURRENCIES),
            "",
            f"- onnxruntime in process (1 thread): 1 image {one_us:,.0f} µs a call; in a 1000-image batch "
            f"{batched_us:,.0f} µs an image ({one_us / batched_us:.2f}x less): the most batching saves on the model",
            f"- tensor, adaptive: {versus(adaptive, off)}",
            f"- tensor, fixed wait: {versus(fixed, off)}",
            f"- PNG, adaptive: {versus(png_on, png_off)}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """This bench's own options, then bench_command's (--seconds, --rounds, --warmup) and its frame."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers of each server (default 1)")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="BATCH_MAX_WAIT_MS of the batched (default 2)")
    parser.add_argument("--max-items", type=int, default=64, help="BATCH_MAX_ITEMS of the batched (default 64)")
    own, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return bench_command(__doc__, rest, lambda args: bench(argparse.Namespace(**vars(args), **vars(own))))


if __name__ == "__main__":
    sys.exit(main())
