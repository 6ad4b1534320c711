"""The two lines every bench report carries, which `make bench` (mlpatterns/bench/all.py) reads back into its summary:

    - key figure: hit p50 at c=1 0.38 ms, 1.26x the bare Redis GET's (the floor)
    - target: at most 2x the bare Redis GET's p50: met

The key figure is the one a reader of the pattern's README wants first, with its ratio to the floor measured in the
same run; the target is the performance issue's, or "none set" where it names none. A missed target is printed as
NOT MET and never changes a bench's exit status: a bench fails on wrong answers and errors, not on a slow machine.
"""

KEY = "- key figure: "
TARGET = "- target: "


def verdict_lines(figure: str, ratio: str, target: str | None = None, met: bool | None = None) -> list[str]:
    """`figure`: what and how much ("hit p50 at c=1 0.38 ms"); `ratio`: against the floor ("1.26x the bare GET's");
    `target` and whether it is `met` (None: the issue sets none)."""
    verdict = "none set by the performance issue" if target is None else f"{target}: {'met' if met else 'NOT MET'}"
    return [f"{KEY}{figure}, {ratio}", f"{TARGET}{verdict}"]


def read_verdict(report: str) -> tuple[str, str] | None:
    """(key figure, target verdict) from a report's text, or None if it lacks either line."""
    lines = report.splitlines()
    key = next((line.removeprefix(KEY) for line in lines if line.startswith(KEY)), None)
    target = next((line.removeprefix(TARGET) for line in lines if line.startswith(TARGET)), None)
    return (key, target) if key and target else None


PROXY_LIMIT_MS = 0.5  # the performance issue's target for chapter 6's proxies, over a direct call's p50 at c=1


def proxy_verdict(proxied_ms: float, direct_ms: float, proxied: str, direct: str) -> list[str]:
    """The verdict lines of a chapter 6 proxy: its p50 at one connection beside a direct call's, in one run."""
    return verdict_lines(
        f"p50 at c=1 {proxied} {proxied_ms:.2f} ms",
        f"{proxied_ms - direct_ms:+.2f} ms over {direct} ({direct_ms:.2f} ms)",
        f"at most {PROXY_LIMIT_MS:g} ms added to a direct call's p50 at c=1",
        proxied_ms - direct_ms <= PROXY_LIMIT_MS,
    )
