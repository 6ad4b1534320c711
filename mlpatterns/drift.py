"""Drift statistics for prediction monitoring: is a window of served inputs still like the training data?

Three checks per window of stored records, each against a `Reference` made once from the training rows:

- `mean`: the original sample's check. A feature's mean in the window, relative to its training mean, may move
  by at most MEAN_THRESHOLD (0.05: 5 %) either way. Cheap and readable, and blind to a change of shape that keeps
  the mean (a bimodal feature whose modes swap weight), and noisy on small windows.
- `psi`: the population stability index of each feature over fixed bins made from the training deciles:
  sum((w - r) * ln(w / r)) over the bins, w the window's share of rows in a bin, r the training share. 0 for the
  same distribution; the usual reading is < 0.1 stable, 0.1-0.2 moving, > 0.2 shifted (PSI_THRESHOLD).
  Bin edges sit halfway between neighbouring distinct training values, so that measurements rounded to 0.1 cm
  (the iris data) do not fall on an edge and flip bins on the smallest noise.
- `outlier_rate`: the share of rows the one-class model flagged, at most OUTLIER_THRESHOLD (0.2, the original's).

`check_window(rows, is_outlier, reference, thresholds, start, end)` gives the alerts of one window. `Monitor`
runs it over a sliding window [now - window_seconds, now) of records fetched by a `source` callable, at the
time its `clock` says (injectable: a test replays stored records at the times it chooses). Numpy only: the
serving images carry no scipy.
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
PSI_FLOOR = 1e-4  # an empty bin counts as this share, so that ln(w / r) stays finite


@dataclass(frozen=True)
class Reference:
    """What the training data looked like, per feature: its mean, PSI bin edges and each bin's share of rows,
    and the share of training rows the outlier model flags."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    edges: tuple[tuple[float, ...], ...]  # per feature, the inner edges (bins: (-inf, e0), [e0, e1), ..., [en, inf))
    shares: tuple[tuple[float, ...], ...]  # per feature, len(edges) + 1 shares summing to 1
    outlier_rate: float | None = None
    rows: int = 0

    @classmethod
    def from_rows(
        cls,
        rows: np.ndarray,
        features: Sequence[str] = IRIS_FEATURES,
        bins: int = 10,
        outlier_rate: float | None = None,
    ) -> "Reference":
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(features) or len(rows) < bins:
            raise ValueError(f"reference rows must be (N >= {bins}, {len(features)}), got {rows.shape}")
        edges = tuple(tuple(_edges(rows[:, i], bins)) for i in range(rows.shape[1]))
        shares = tuple(tuple(_shares(rows[:, i], e).tolist()) for i, e in enumerate(edges))
        return cls(
            features=tuple(features),
            means=tuple(float(m) for m in rows.mean(axis=0)),
            edges=edges,
            shares=shares,
            outlier_rate=outlier_rate,
            rows=len(rows),
        )

    @classmethod
    def load(cls, path: Path) -> "Reference":
        raw = json.loads(Path(path).read_text())
        return cls(
            features=tuple(raw["features"]),
            means=tuple(raw["means"]),
            edges=tuple(tuple(e) for e in raw["edges"]),
            shares=tuple(tuple(s) for s in raw["shares"]),
            outlier_rate=raw.get("outlier_rate"),
            rows=raw.get("rows", 0),
        )

    def dumps(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


def _edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner bin edges at the deciles (for bins=10), each moved halfway between the two distinct values around
    it; edges that collapse into one (many ties) are kept once."""
    distinct = np.unique(values)
    edges: list[float] = []
    for q in np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]):
        above = int(np.searchsorted(distinct, q, side="right"))
        if above == 0 or above == len(distinct):
            continue
        edge = float((distinct[above - 1] + distinct[above]) / 2)
        if not edges or edge > edges[-1]:
            edges.append(round(edge, 6))
    return edges


def _shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def relative_mean_shift(values: np.ndarray, reference_mean: float) -> float:
    """mean(values) / reference_mean - 1: +0.1 is 10 % above the training mean."""
    return float(np.mean(values) / reference_mean - 1.0)


def psi(values: np.ndarray, edges: Sequence[float], reference_shares: Sequence[float]) -> float:
    """The population stability index of `values` over the reference's bins (0: the same shares)."""
    window = np.clip(_shares(np.asarray(values, dtype=np.float64), edges), PSI_FLOOR, None)
    expected = np.clip(np.asarray(reference_shares, dtype=np.float64), PSI_FLOOR, None)
    return float(np.sum((window - expected) * np.log(window / expected)))


@dataclass(frozen=True)
class Thresholds:
    mean: float = 0.05  # the original's --threshold: |mean / reference - 1| above this alerts
    psi: float = 0.2
    outlier_rate: float = 0.2  # the original's --outlier_threshold
    min_rows: int = 30  # a window with fewer rows is not judged (too few for a mean or a share)


@dataclass(frozen=True)
class Alert:
    check: str  # "mean", "psi" or "outlier_rate"
    feature: str | None  # the feature, or None for the outlier rate
    value: float  # the relative mean shift, the PSI, or the outlier share
    threshold: float
    window_start: float  # Unix seconds
    window_end: float
    rows: int

    def message(self) -> str:
        subject = f"{self.feature} {self.check}" if self.feature else self.check
        return (
            f"{subject} out of threshold: {self.value:+.4f} (threshold {self.threshold:g}) "
            f"over {self.rows} rows in [{_iso(self.window_start)}, {_iso(self.window_end)})"
        )


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class WindowSummary:
    """What one window looked like, alert or not: for logs, the web page and the tests."""

    window_start: float
    window_end: float
    rows: int
    means: dict[str, float] = field(default_factory=dict)
    mean_shifts: dict[str, float] = field(default_factory=dict)
    psi: dict[str, float] = field(default_factory=dict)
    outlier_rate: float | None = None
    alerts: list[Alert] = field(default_factory=list)


def check_window(
    rows: np.ndarray,
    is_outlier: np.ndarray,
    reference: Reference,
    thresholds: Thresholds,
    start: float,
    end: float,
) -> WindowSummary:
    """The three checks over one window's rows (N, features) and outlier flags (M,), M may differ from N."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(reference.features))
    is_outlier = np.asarray(is_outlier, dtype=bool).reshape(-1)
    summary = WindowSummary(start, end, len(rows))
    alerts = summary.alerts
    if len(rows) >= thresholds.min_rows:
        for i, name in enumerate(reference.features):
            column = rows[:, i]
            shift = relative_mean_shift(column, reference.means[i])
            index = psi(column, reference.edges[i], reference.shares[i])
            summary.means[name] = float(column.mean())
            summary.mean_shifts[name] = shift
            summary.psi[name] = index
            if abs(shift) > thresholds.mean:
                alerts.append(Alert("mean", name, shift, thresholds.mean, start, end, len(rows)))
            if index > thresholds.psi:
                alerts.append(Alert("psi", name, index, thresholds.psi, start, end, len(rows)))
    if len(is_outlier) >= thresholds.min_rows:
        rate = float(is_outlier.mean())
        object.__setattr__(summary, "outlier_rate", rate)
        if rate > thresholds.outlier_rate:
            alerts.append(Alert("outlier_rate", None, rate, thresholds.outlier_rate, start, end, len(is_outlier)))
    return summary


# A source gives the rows (N, features) and outlier flags (N,) of the records stored in [start, end).
Source = Callable[[float, float], tuple[np.ndarray, np.ndarray]]


class Monitor:
    """A sliding window over stored records, judged against the reference at the time `clock()` says."""

    def __init__(
        self,
        source: Source,
        reference: Reference,
        thresholds: Thresholds = Thresholds(),
        window_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ):
        if window_seconds <= 0 or not math.isfinite(window_seconds):
            raise ValueError(f"window_seconds must be a positive number, got {window_seconds}")
        self.source = source
        self.reference = reference
        self.thresholds = thresholds
        self.window_seconds = window_seconds
        self.clock = clock

    def check(self, now: float | None = None) -> WindowSummary:
        end = self.clock() if now is None else now
        start = end - self.window_seconds
        rows, is_outlier = self.source(start, end)
        return check_window(rows, is_outlier, self.reference, self.thresholds, start, end)
