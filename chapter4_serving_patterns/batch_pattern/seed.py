"""`python -m chapter4_serving_patterns.batch_pattern.seed [--rows N]`: make sure the table holds the seeded rows
0..N-1 (SEED_ROWS, default 150), then exit. Seeding is idempotent: each seeded row carries its index under a
unique constraint, and rows are inserted with ON CONFLICT DO NOTHING, so a second seeding (or two at once) adds
nothing, and a larger N adds only the rows it lacks.

The rows are real iris flowers (`data/iris.csv`: scikit-learn's copy of Fisher's 150 measurements, 50 of each
species, checked against `sklearn.datasets.load_iris` by the tests). Row i is flower i % 150:
- the first 150 rows (copy 0) are the flowers exactly as measured;
- later copies (c = i // 150 >= 1) add a fixed-seed jitter: N(0, 0.1 cm) on each measurement, drawn from
  numpy's PCG64 seeded with (JITTER_SEED, c), rounded to 0.01 cm and kept at 0.1 cm or more.
Every row keeps the species of the flower it came from, so a prediction can be checked against it.
"""

import argparse
import csv
import logging
from functools import cache
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from chapter4_serving_patterns.batch_pattern.settings import SeedSettings
from chapter4_serving_patterns.batch_pattern.tables import items
from mlpatterns.db import wait_for_database
from mlpatterns.logging import configure_logging

IRIS_CSV = Path(__file__).parent / "data" / "iris.csv"
JITTER_SEED = 20261130
JITTER_CM = 0.1
INSERT_ROWS = 5000  # per INSERT statement
logger = logging.getLogger(__name__)


@cache
def iris() -> tuple[np.ndarray, tuple[str, ...]]:
    """The 150 flowers: (150, 4) measurements in cm and their species."""
    with IRIS_CSV.open() as file:
        rows = list(csv.DictReader(file))
    features = np.array([[float(row[name]) for name in list(row)[:4]] for row in rows])
    return features, tuple(row["species"] for row in rows)


def seed_rows(start: int, stop: int) -> tuple[np.ndarray, list[str]]:
    """The seeded rows start..stop-1: (values, species), the same whatever else is asked for."""
    features, species = iris()
    flowers = len(species)
    blocks = []
    for copy in range(start // flowers, (stop - 1) // flowers + 1):
        block = features
        if copy:
            jitter = np.random.default_rng([JITTER_SEED, copy]).normal(0.0, JITTER_CM, size=features.shape)
            block = np.maximum(np.round(features + jitter, 2), 0.1)
        blocks.append(block)
    values = np.concatenate(blocks)[start % flowers :][: stop - start]
    return values, [species[i % flowers] for i in range(start, stop)]


def seed(engine: Engine, rows: int) -> int:
    """Insert the seeded rows 0..rows-1 that the table lacks; how many were added."""
    added = 0
    for start in range(0, rows, INSERT_ROWS):
        stop = min(start + INSERT_ROWS, rows)
        values, species = seed_rows(start, stop)
        batch = [
            {"seed_index": index, "values": row, "species": name}
            for index, row, name in zip(range(start, stop), values.tolist(), species, strict=True)
        ]
        statement = insert(items).values(batch).on_conflict_do_nothing(index_elements=["seed_index"])
        with engine.begin() as connection:
            added += connection.execute(statement).rowcount
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="seeded rows wanted (default: SEED_ROWS)")
    args = parser.parse_args(argv)
    settings = SeedSettings() if args.rows is None else SeedSettings(seed_rows=args.rows)
    configure_logging(settings.log_level, settings.log_json)
    engine = settings.engine()
    try:
        wait_for_database(engine, timeout=settings.db_wait_seconds)
        added = seed(engine, settings.seed_rows)
        with engine.connect() as connection:
            total = connection.scalar(select(func.count()).select_from(items))
    finally:
        engine.dispose()
    logger.info(
        "seeded %d rows of %d wanted (the others were there); the table holds %d", added, settings.seed_rows, total
    )


if __name__ == "__main__":
    main()
