"""The monitoring page: the monitored features and the outlier rate over time, with the alerts marked.

GET /series?seconds=&bucket_seconds=   per time bucket: requests' rows, each feature's mean, the outlier share,
                                       and the reference (training means, thresholds) to draw them against
GET /dashboard                         one HTML page: inline SVG drawn by a small script of its own (no
                                       library, nothing fetched but /series and /alerts), refreshed every 5 s
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from mlpatterns.drift import Reference, Thresholds
from mlpatterns.errors import error_responses

PAGE = Path(__file__).with_name("dashboard.html")
MAX_POINTS = 2000

# Rows of every stored request, bucketed by answer time; the features are the rows' columns, in order.
FEATURE_MEANS = text(
    """
    SELECT floor(extract(epoch FROM p.created_datetime) / :bucket) * :bucket AS t, count(*) AS rows,
           avg((r->>0)::float8), avg((r->>1)::float8), avg((r->>2)::float8), avg((r->>3)::float8)
    FROM prediction_log p CROSS JOIN LATERAL jsonb_array_elements(p.log->'data') AS r
    WHERE p.created_datetime >= :since
    GROUP BY t ORDER BY t
    """
)
OUTLIER_SHARES = text(
    """
    SELECT floor(extract(epoch FROM created_datetime) / :bucket) * :bucket AS t, sum(outliers), sum(rows)
    FROM outlier_log WHERE created_datetime >= :since GROUP BY t ORDER BY t
    """
)


class Point(BaseModel):
    time: datetime = Field(description="The bucket's start.")
    rows: int
    means: list[float] = Field(description="Each feature's mean over the bucket's rows, in `features` order.")
    outlier_rate: float | None


class Series(BaseModel):
    features: list[str]
    reference_means: list[float] = Field(description="The training means.")
    mean_threshold: float = Field(description="The monitor's allowed relative move of a mean.")
    outlier_threshold: float
    bucket_seconds: int = Field(description="The bucket used (raised where the span needed it).")
    points: list[Point]


def add_dashboard_routes(app: FastAPI, engine: Engine, reference: Reference, thresholds: Thresholds) -> None:
    page = PAGE.read_text()

    @app.get("/series", response_model=Series, responses=error_responses(422))
    def series(
        seconds: Annotated[int, Query(ge=10, le=7 * 86400, description="How far back, from now.")] = 1800,
        bucket_seconds: Annotated[
            int, Query(ge=1, le=86400, description="Raised where needed to keep 2,000 buckets at most.")
        ] = 10,
    ):
        bucket_seconds = max(bucket_seconds, -(-seconds // MAX_POINTS))  # at most MAX_POINTS buckets
        arguments = {"bucket": bucket_seconds, "since": datetime.now(UTC) - timedelta(seconds=seconds)}
        with engine.connect() as connection:
            means = connection.execute(FEATURE_MEANS, arguments).all()
            shares = {row[0]: row for row in connection.execute(OUTLIER_SHARES, arguments)}
        points = []
        for t, rows, *feature_means in means:
            _, outliers, flagged = shares.get(t, (t, 0, 0))
            points.append(
                {
                    "time": datetime.fromtimestamp(float(t), UTC),
                    "rows": rows,
                    "means": feature_means,
                    "outlier_rate": outliers / flagged if flagged else None,
                }
            )
        return {
            "features": list(reference.features),
            "reference_means": list(reference.means),
            "mean_threshold": thresholds.mean,
            "outlier_threshold": thresholds.outlier_rate,
            "bucket_seconds": bucket_seconds,
            "points": points,
        }

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard():
        return HTMLResponse(page)
