"""The pattern's client: send the shipped sample digits, with or without a `target` header, and check who answered.

    python -m chapter6_operation_management.condition_based_pattern.client --url http://localhost:8000 \\
        --target speech --expect words
    7 -> words: 'seven'
    ...
    10 answers, all from words

One line per digit: the model that answered and its label. With `--expect MODEL`, any answer from another model
makes the exit status 1 (the Kubernetes Job, manifests/client.yml, checks the VirtualService's routes so).
Exit status 1 too when the router refuses, fails or cannot be reached, with one line on stderr.
"""

import argparse
import sys
from collections import Counter

import httpx

from mlpatterns.image_jobs import SAMPLE

HEADER = "target"  # the header the VirtualService and haproxy.cfg route by


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", "-u", default="http://localhost:8000", help="the router (%(default)s)")
    parser.add_argument("--target", "-t", help=f"the `{HEADER}` header's value (default: no header)")
    parser.add_argument("--expect", "-e", help="the model every answer must come from (default: any)")
    parser.add_argument("--timeout", "-s", type=float, default=15.0, help="seconds per answer (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {HEADER: args.target} if args.target is not None else {}
    answered_by: Counter[str] = Counter()
    with httpx.Client(base_url=args.url, timeout=args.timeout, headers=headers) as client:
        for digit, image in SAMPLE.items():
            try:
                response = client.post("/predict", json={"image_data": image})
            except httpx.TransportError as error:
                raise SystemExit(f"error: no answer from {args.url}: {type(error).__name__} {error}") from None
            if response.status_code != 200:
                raise SystemExit(f"error: {args.url}/predict answered {response.status_code}: {response.text[:200]}")
            answer = response.json()
            answered_by[answer["model"]] += 1
            print(f"{digit} -> {answer['model']}: {answer['prediction']!r}")
    models = ", ".join(f"{count} from {model}" for model, count in answered_by.items())
    print(f"{sum(answered_by.values())} answers, {models}")
    wrong = {model: count for model, count in answered_by.items() if args.expect not in (None, model)}
    if wrong:
        print(f"error: expected every answer from {args.expect}, got {models}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
