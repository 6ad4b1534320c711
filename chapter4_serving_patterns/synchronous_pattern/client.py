"""The synchronous pattern's client: send one image, wait for the label, print it with the round trip's latency.

    python -m chapter4_serving_patterns.synchronous_pattern.client --image mlpatterns/data/digits/3.png
    label: 3
    latency: 4.1 ms

It blocks: nothing else happens until the model server answers or the timeout passes, which is the pattern.
It speaks TF Serving's REST API (a real TF Serving with an image model of that signature answers it too).
Exit status: 0 answered; 1 refused (4xx), failed (5xx), unreachable or timed out, each with one line on stderr.
"""

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import httpx


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", "-i", type=Path, help="the image file to classify (PNG, JPEG, ...)")
    parser.add_argument("--url", "-u", default="http://localhost:8501", help="the model server (%(default)s)")
    parser.add_argument("--model", "-m", default="digits", help="the model's name on the server (%(default)s)")
    parser.add_argument("--signature", "-n", default="serving_default", help="the signature (%(default)s)")
    parser.add_argument("--timeout", "-s", type=float, default=5.0, help="seconds to wait for the answer (%(default)s)")
    parser.add_argument("--metadata", action="store_true", help="print the model's metadata instead of predicting")
    args = parser.parse_args(argv)
    if not args.metadata and args.image is None:
        parser.error("--image is required (or --metadata)")
    return args


def call(client: httpx.Client, method: str, path: str, **kwargs) -> tuple[dict, float]:
    """One request, answered: (its JSON answer, its latency in seconds); a failure raises SystemExit(message)."""
    start = time.perf_counter()
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise SystemExit(f"error: no answer from {client.base_url} within {client.timeout.read} s") from None
    except httpx.TransportError as error:
        raise SystemExit(f"error: cannot reach {client.base_url}: {error}") from None
    latency = time.perf_counter() - start
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code >= 400:
        # The project's servers say what went wrong in `detail`; TF Serving says it in `error`.
        reason = (answer.get("detail") or answer.get("error")) if isinstance(answer, dict) else None
        reason = reason if isinstance(reason, str) else json.dumps(reason) if reason else response.text[:200]
        kind = "refused" if response.status_code < 500 else "failed"
        raise SystemExit(f"error: the server {kind} the request ({response.status_code}): {reason}")
    return answer, latency


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        if args.metadata:
            answer, _ = call(client, "GET", f"/v1/models/{args.model}/metadata")
            print(json.dumps(answer, indent=2))
            return 0
        try:
            image = base64.b64encode(args.image.read_bytes()).decode("ascii")
        except OSError as error:
            raise SystemExit(f"error: cannot read {args.image}: {error.strerror}") from None
        body = {"signature_name": args.signature, "instances": [{"b64": image}]}
        answer, latency = call(client, "POST", f"/v1/models/{args.model}:predict", json=body)
    (prediction,) = answer["predictions"]
    print(f"label: {prediction}" if isinstance(prediction, str) else f"prediction: {prediction}")
    print(f"latency: {latency * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
