"""The offline comparison of a shadow test: A's and B's prediction records paired by request id.

    python -m chapter6_operation_management.shadow_ab_pattern.compare A_RECORDS B_RECORDS

Each argument is a file of A's (or B's) output: its prediction log (LOG_PATH), or its logs as they come
(`docker compose logs --no-log-prefix iris-svc`, `kubectl logs -n shadow-ab -l version=svc`; `-` reads stdin):
lines that are not records (the server's own log lines) are passed over. Prints how many requests both models
answered, how often their labels agree, row by row, and the rows where they differ; and the requests only one
of them recorded (B's copies dropped or failed, or records still on their way).
"""

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


def read_records(lines: Iterable[str]) -> Iterator[dict]:
    """The prediction records among the lines: JSON objects with a request id and a model."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("request_id") and record.get("model"):
            yield record


@dataclass
class Comparison:
    pairs: list[tuple[dict, dict]]  # (A's record, B's record) of one request, in A's order
    only_a: list[dict]
    only_b: list[dict]

    @property
    def rows(self) -> int:
        return sum(len(a["label"]) for a, _ in self.pairs)

    @property
    def agreeing_rows(self) -> int:
        return sum(x == y for a, b in self.pairs for x, y in zip(a["label"], b["label"], strict=True))

    def disagreements(self) -> Iterator[tuple[dict, int]]:
        """(A's record, row index) of every row whose labels differ."""
        for a, b in self.pairs:
            for row, (x, y) in enumerate(zip(a["label"], b["label"], strict=True)):
                if x != y:
                    yield a, row


def compare(a_records: Iterable[dict], b_records: Iterable[dict]) -> Comparison:
    b_by_id = {record["request_id"]: record for record in b_records}
    pairs, only_a = [], []
    for record in a_records:
        shadow = b_by_id.pop(record["request_id"], None)
        if shadow is None:
            only_a.append(record)
        else:
            pairs.append((record, shadow))
    return Comparison(pairs, only_a, list(b_by_id.values()))


def summary(comparison: Comparison, shown: int = 10) -> str:
    rows, agreeing = comparison.rows, comparison.agreeing_rows
    lines = [
        f"{len(comparison.pairs)} requests recorded by both models ({rows} rows): labels agree on {agreeing} rows"
        + (f" ({agreeing / rows:.1%})" if rows else ""),
    ]
    pairs = {a["request_id"]: b for a, b in comparison.pairs}
    for number, (a, row) in enumerate(comparison.disagreements()):
        if number == shown:
            lines.append(f"  ... and {rows - agreeing - shown} more")
            break
        b = pairs[a["request_id"]]
        lines.append(
            f"  {a['request_id']} row {row} {a['input'][row]}: {a['model']} {a['label'][row]} "
            f"{_rounded(a['prediction'][row])}, {b['model']} {b['label'][row]} {_rounded(b['prediction'][row])}"
        )
    lines.append(f"{len(comparison.only_a)} recorded by A only, {len(comparison.only_b)} by B only")
    return "\n".join(lines)


def _rounded(scores: list[float]) -> list[float]:
    return [round(score, 3) for score in scores]


def _lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read().splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chapter6_operation_management.shadow_ab_pattern.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a_records", help="model A's records or logs (- for stdin)")
    parser.add_argument("b_records", help="model B's records or logs (- for stdin)")
    args = parser.parse_args(argv)
    if args.a_records == args.b_records == "-":
        parser.error("only one of the two can be read from stdin")
    try:
        a_lines, b_lines = _lines(args.a_records), _lines(args.b_records)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(compare(read_records(a_lines), read_records(b_lines))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
