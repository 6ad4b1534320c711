"""`python -m chapter5_operations.prediction_monitoring_pattern.load`: replay a generated iris stream at the API,
with drift planted at known blocks, so that the monitor has something to find (and something to leave alone).

The stream (`stream()`, deterministic for a SEED): BLOCKS blocks of BLOCK_ROWS rows. A clean block is the 150
training flowers (reference.json), each once per 150 rows in a random order, with N(0, 0.02 cm) noise: its
feature means and shape are the training data's. DRIFT_PLAN plants changes in given blocks:

    2:all*1.10                              every feature of block 2 x 1.10 (means +10 %)
    5:outliers=0.4                          40 % of block 5's rows replaced by points far from any flower
    7:petal_length*0.92+petal_width*0.92    block 7's petals 8 % smaller

Each row is one POST {"data": [row]} with X-Request-ID `load-<seed>-<index>` (so each stored record names its
place in the stream), on one connection, at RATE_PER_SECOND (on a fixed schedule: a slow answer is caught up,
not added; 0 = as fast as answered). The job logs each block as it starts and exits 0 at the end (REPEAT: starts
again with the next seed), 1 if any request failed.
"""

import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from chapter5_operations.prediction_monitoring_pattern.settings import REFERENCE_PATH, LoadSettings
from mlpatterns.drift import IRIS_FEATURES
from mlpatterns.logging import configure_logging

logger = logging.getLogger(__name__)
NOISE_CM = 0.02
# Far from every flower: the one-class model scores ~94 % of these as outliers.
OUTLIER_LOW, OUTLIER_HIGH = np.array([4.0, 2.0, 1.0, 0.1]), np.array([8.0, 4.5, 7.0, 2.5])
_CHANGE = re.compile(r"^(?:(?P<feature>\w+)\*(?P<factor>[0-9.]+)|outliers=(?P<share>[0-9.]+))$")


@dataclass(frozen=True)
class Drift:
    factors: tuple[float, ...] = (1.0,) * len(IRIS_FEATURES)
    outlier_share: float = 0.0
    text: str = field(default="", compare=False)


def parse_plan(plan: str, features=IRIS_FEATURES) -> dict[int, Drift]:
    """`block:change+change,...` -> {block: Drift}; a clear ValueError on anything else."""
    drifts: dict[int, Drift] = {}
    for item in filter(None, (part.strip() for part in plan.split(","))):
        block, _, changes = item.partition(":")
        if not block.isdigit() or not changes:
            raise ValueError(f"drift plan item {item!r}: expected block:change, e.g. 2:all*1.1")
        factors, share = [1.0] * len(features), 0.0
        for change in changes.split("+"):
            match = _CHANGE.match(change.strip())
            if not match:
                raise ValueError(f"drift plan item {item!r}: cannot read {change!r}")
            if match["share"] is not None:
                share = float(match["share"])
                if not 0 <= share <= 1:
                    raise ValueError(f"drift plan item {item!r}: an outlier share is between 0 and 1")
            elif match["feature"] == "all":
                factors = [f * float(match["factor"]) for f in factors]
            elif match["feature"] in features:
                factors[features.index(match["feature"])] *= float(match["factor"])
            else:
                raise ValueError(f"drift plan item {item!r}: unknown feature {match['feature']!r}")
        drifts[int(block)] = Drift(tuple(factors), share, changes)
    return drifts


def training_rows(path: Path = REFERENCE_PATH) -> np.ndarray:
    import json

    return np.asarray(json.loads(Path(path).read_text())["training_rows"], dtype=np.float64)


def stream(rows: np.ndarray, blocks: int, block_rows: int, plan: dict[int, Drift], seed: int) -> np.ndarray:
    """(blocks * block_rows, 4) rows, rounded to 0.01 cm; block b drifted as plan[b] says."""
    rng = np.random.default_rng(seed)
    out = []
    for block in range(blocks):
        order = np.concatenate([rng.permutation(len(rows)) for _ in range(-(-block_rows // len(rows)))])
        chunk = rows[order[:block_rows]] + rng.normal(0.0, NOISE_CM, (block_rows, rows.shape[1]))
        drift = plan.get(block)
        if drift is not None:
            chunk = chunk * np.asarray(drift.factors)
            replaced = rng.choice(block_rows, round(drift.outlier_share * block_rows), replace=False)
            chunk[replaced] = rng.uniform(OUTLIER_LOW, OUTLIER_HIGH, (len(replaced), rows.shape[1]))
        out.append(chunk)
    return np.round(np.clip(np.concatenate(out), 0.1, None), 2)


def request_id(seed: int, index: int) -> str:
    return f"load-{seed}-{index:07d}"


def send(client: httpx.Client, rows: np.ndarray, settings: LoadSettings, seed: int, plan: dict[int, Drift]) -> int:
    """POST every row on schedule; the number of failed requests."""
    failed = 0
    start = time.monotonic()
    for index, row in enumerate(rows.tolist()):
        if index % settings.block_rows == 0:
            block = index // settings.block_rows
            drift = plan.get(block)
            logger.info("block %d from row %d: %s", block, index, f"drift {drift.text}" if drift else "clean")
        if settings.rate_per_second:
            wait = start + index / settings.rate_per_second - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            response = client.post(
                settings.target_url, json={"data": [row]}, headers={"X-Request-ID": request_id(seed, index)}
            )
            ok = response.status_code == 200
        except httpx.HTTPError as error:
            ok, response = False, error
        if not ok:
            failed += 1
            logger.error("row %d not answered: %s", index, response)
        if settings.heartbeat_path is not None:  # alive and sending: the healthcheck of a job that opens no port
            settings.heartbeat_path.touch()
    return failed


def wait_for_api(client: httpx.Client, settings: LoadSettings) -> None:
    """Send nothing before the API answers its /health (a Job's pod may start before the API's): rows sent to an
    API that is not up would fail and leave holes in the stream's blocks."""
    health = str(httpx.URL(settings.target_url).join("/health"))
    deadline = time.monotonic() + settings.api_wait_seconds
    while True:
        try:
            if client.get(health).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{health} did not answer 200 within {settings.api_wait_seconds:g} s")
        time.sleep(1.0)


def main() -> int:
    settings = LoadSettings()
    configure_logging(settings.log_level, settings.log_json)
    plan = parse_plan(settings.drift_plan)
    source = training_rows()
    time.sleep(settings.start_delay_seconds)
    seed, failed = settings.seed, 0
    with httpx.Client(timeout=10.0) as client:
        wait_for_api(client, settings)
        while True:
            rows = stream(source, settings.blocks, settings.block_rows, plan, seed)
            failed += send(client, rows, settings, seed, plan)
            logger.info("stream of seed %d sent: %d rows, %d failed", seed, len(rows), failed)
            if not settings.repeat:
                return 1 if failed else 0
            seed += 1


if __name__ == "__main__":
    sys.exit(main())
