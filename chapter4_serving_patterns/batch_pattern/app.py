"""The batch pattern's API: it only reads the table the job writes. gunicorn calls `create_app()` in each worker.

Routes (the original's three, with paging, plus a count and the job's runs):
    GET /health                      {"health": "ok"} while the database answers, else 503
    GET /data/all?limit=&after_id=   rows by id: those with id > after_id, at most `limit` (1..1000, 100)
    GET /data/predicted              the same, of rows the job has predicted
    GET /data/unpredicted            the same, of rows still pending
    GET /data/count                  {"all": N, "predicted": P, "unpredicted": U}
    GET /runs?limit=                 the job's runs, newest first
Paging is by key (`after_id` = the last id of the previous page), so a page never skips or repeats a row while
the job moves rows from unpredicted to predicted.
"""

from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Connection, func, select, text

from chapter4_serving_patterns.batch_pattern.settings import ApiSettings
from chapter4_serving_patterns.batch_pattern.tables import batch_runs, items
from mlpatterns.errors import error_responses
from mlpatterns.serving.service import create_service_app


class Item(BaseModel):
    id: int
    values: list[float] = Field(description="sepal length, sepal width, petal length, petal width (cm)")
    species: str | None = Field(description="The known species of a seeded iris row, else null.")
    prediction: list[float] | None = Field(description="Class probabilities in class order; null while pending.")
    label: str | None = Field(description="The predicted class; null while pending.")
    predicted_by: str | None = Field(description="The job run that predicted the row (see /runs).")
    predicted_datetime: datetime | None
    prediction_count: int = Field(description="How many times a job predicted the row: 1 once predicted.")
    created_datetime: datetime
    updated_datetime: datetime


class Counts(BaseModel):
    all: int
    predicted: int
    unpredicted: int


class Run(BaseModel):
    run_id: str
    job_name: str
    model: str
    started_datetime: datetime
    finished_datetime: datetime | None = Field(description="null while the run goes on, or if it failed")
    rows_predicted: int
    chunks: int


class Health(BaseModel):
    health: str


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000, description="At most this many rows (1 to 1000).")
    after_id: int = Field(0, ge=0, le=2**63 - 1, description="Rows with a larger id: the last id of the page before.")


class RunPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=1000, description="The newest this many runs (1 to 1000).")


def get_connection(request: Request) -> Iterator[Connection]:
    with request.app.state.engine.connect() as connection:
        yield connection


ConnectionDep = Annotated[Connection, Depends(get_connection)]
PageDep = Annotated[Page, Query()]
ITEM_COLUMNS = [items.c[name] for name in Item.model_fields]


def _page(connection: Connection, page: Page, *where: ColumnElement[bool]) -> list[dict]:
    statement = select(*ITEM_COLUMNS).where(items.c.id > page.after_id, *where).order_by(items.c.id).limit(page.limit)
    return [dict(row._mapping) for row in connection.execute(statement)]


def add_routes(router: APIRouter) -> None:
    unavailable = error_responses(503)  # every route asks the database

    @router.get("/health", response_model=Health, responses=unavailable, tags=["health"])
    def health(connection: ConnectionDep):
        """Ready when the database answers (a 503 otherwise)."""
        connection.execute(text("SELECT 1"))
        return {"health": "ok"}

    @router.get("/data/all", response_model=list[Item], responses=unavailable, tags=["data"])
    def all_items(connection: ConnectionDep, page: PageDep):
        return _page(connection, page)

    @router.get("/data/predicted", response_model=list[Item], responses=unavailable, tags=["data"])
    def predicted_items(connection: ConnectionDep, page: PageDep):
        return _page(connection, page, items.c.prediction.is_not(None))

    @router.get("/data/unpredicted", response_model=list[Item], responses=unavailable, tags=["data"])
    def unpredicted_items(connection: ConnectionDep, page: PageDep):
        return _page(connection, page, items.c.prediction.is_(None))

    @router.get("/data/count", response_model=Counts, responses=unavailable, tags=["data"])
    def count_items(connection: ConnectionDep):
        """How many rows there are, and how many the job has predicted (the pending count falls to 0 as it runs)."""
        total, predicted = connection.execute(
            select(func.count(), func.count(items.c.prediction)).select_from(items)
        ).one()
        return {"all": total, "predicted": predicted, "unpredicted": total - predicted}

    @router.get("/runs", response_model=list[Run], responses=unavailable, tags=["runs"])
    def runs(connection: ConnectionDep, page: Annotated[RunPage, Query()]):
        """The job's runs, newest first: which process ran, when, and how many rows its model predicted."""
        statement = select(batch_runs).order_by(batch_runs.c.started_datetime.desc(), batch_runs.c.run_id)
        return [dict(row._mapping) for row in connection.execute(statement.limit(page.limit))]


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    engine = settings.engine()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.dispose()

    app = create_service_app(settings, add_routes, lifespan=lifespan)
    app.state.engine = engine
    return app
