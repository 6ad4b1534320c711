"""Reads and writes of the registry. Each function takes a session and keyword arguments, commits what it
writes, and raises NotFound for a missing row, so that a route is one call.

Concurrency is left to PostgreSQL: a create is `INSERT ... ON CONFLICT DO NOTHING` on the unique name, so
clients racing to create the same project all get the one row; a merge is one `UPDATE ... SET x = x || new`,
which PostgreSQL applies to the newest row version, so concurrent merges of different keys all persist.
"""

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from chapter2_training.model_db.schemas import ExperimentCreate, ModelCreate, Page, ProjectCreate
from chapter2_training.model_db.tables import Base, Experiment, Model, Project, new_id
from mlpatterns.errors import NotFound

T = TypeVar("T", bound=Base)


def _get(session: Session, table: type[T], key: str) -> T:
    row = session.get(table, key)
    if row is None:
        raise NotFound(f"{table.__name__.lower()} {key!r} not found")
    return row


def _insert_once(session: Session, table: type[T], values: dict[str, Any], unique: list[str]) -> T:
    """Insert unless a row with the same `unique` columns exists; either way, return that one row."""
    session.execute(insert(table).values(values).on_conflict_do_nothing(index_elements=unique))
    # Under READ COMMITTED this select sees a row that a racing client committed while we waited on it.
    row = session.scalars(select(table).filter_by(**{name: values[name] for name in unique})).one()
    session.commit()
    return row


def _all(session: Session, table: type[T], page: Page, *where: ColumnElement[bool]) -> Sequence[T]:
    """One page of the rows, in creation order (the primary key breaks ties, so pages never overlap)."""
    order = [table.created_datetime, table.__mapper__.primary_key[0]]
    if page.order == "desc":
        order = [column.desc() for column in order]
    statement = select(table).where(*where).order_by(*order).limit(page.limit).offset(page.offset)
    return session.scalars(statement).all()


# -- projects --------------------------------------------------------------------------------------------


def create_project(*, session: Session, project_in: ProjectCreate) -> Project:
    """Idempotent on the name: an existing project is returned unchanged (a new description is ignored)."""
    return _insert_once(session, Project, {"project_id": new_id(), **project_in.model_dump()}, ["project_name"])


def get_project(*, session: Session, project_id: str) -> Project:
    return _get(session, Project, project_id)


def get_project_by_name(*, session: Session, project_name: str) -> Project:
    project = session.scalars(select(Project).where(Project.project_name == project_name)).one_or_none()
    if project is None:
        raise NotFound(f"no project named {project_name!r}")
    return project


def list_projects(*, session: Session, page: Page) -> Sequence[Project]:
    return _all(session, Project, page)


# -- models ----------------------------------------------------------------------------------------------


def create_model(*, session: Session, model_in: ModelCreate) -> Model:
    """Idempotent on (project_id, model_name). An unknown project is a NotFound, not a foreign-key error."""
    get_project(session=session, project_id=model_in.project_id)
    return _insert_once(session, Model, {"model_id": new_id(), **model_in.model_dump()}, ["project_id", "model_name"])


def get_model(*, session: Session, model_id: str) -> Model:
    return _get(session, Model, model_id)


def list_models(*, session: Session, page: Page) -> Sequence[Model]:
    return _all(session, Model, page)


def list_models_of_project(*, session: Session, project: Project, page: Page) -> Sequence[Model]:
    return _all(session, Model, page, Model.project_id == project.project_id)


def list_models_named(*, session: Session, model_name: str, page: Page) -> Sequence[Model]:
    """Models of this name in every project (an empty list when there is none)."""
    return _all(session, Model, page, Model.model_name == model_name)


# -- experiments -----------------------------------------------------------------------------------------


def create_experiment(*, session: Session, experiment_in: ExperimentCreate) -> Experiment:
    """Always a new row: every training run is an experiment of its own."""
    get_model(session=session, model_id=experiment_in.model_id)
    experiment = Experiment(**experiment_in.model_dump())
    session.add(experiment)
    session.commit()
    return experiment


def get_experiment(*, session: Session, experiment_id: str) -> Experiment:
    return _get(session, Experiment, experiment_id)


def get_experiment_by_model_version(*, session: Session, model_version_id: str) -> Experiment:
    """The first experiment recorded for this model version."""
    statement = select(Experiment).where(Experiment.model_version_id == model_version_id)
    experiment = session.scalars(statement.order_by(Experiment.created_datetime).limit(1)).first()
    if experiment is None:
        raise NotFound(f"no experiment with model_version_id {model_version_id!r}")
    return experiment


def list_experiments(*, session: Session, page: Page) -> Sequence[Experiment]:
    return _all(session, Experiment, page)


def list_experiments_of_model(*, session: Session, model: Model, page: Page) -> Sequence[Experiment]:
    return _all(session, Experiment, page, Experiment.model_id == model.model_id)


def list_experiments_of_project(*, session: Session, project: Project, page: Page) -> Sequence[Experiment]:
    in_project = select(Model.model_id).where(Model.project_id == project.project_id)
    return _all(session, Experiment, page, Experiment.model_id.in_(in_project))


def _merge(session: Session, experiment_id: str, column: InstrumentedAttribute, new: dict[str, Any]) -> Experiment:
    """Add `new`'s keys to the stored object (replacing those it repeats) in one atomic UPDATE."""
    merged = func.coalesce(column, cast({}, JSONB)).op("||")(cast(new, JSONB))
    statement = update(Experiment).where(Experiment.experiment_id == experiment_id).values({column: merged})
    experiment = session.scalars(statement.returning(Experiment)).one_or_none()
    if experiment is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    session.commit()
    return experiment


def merge_evaluations(*, session: Session, experiment_id: str, evaluations: dict[str, Any]) -> Experiment:
    return _merge(session, experiment_id, Experiment.evaluations, evaluations)


def merge_artifact_file_paths(
    *, session: Session, experiment_id: str, artifact_file_paths: dict[str, Any]
) -> Experiment:
    return _merge(session, experiment_id, Experiment.artifact_file_paths, artifact_file_paths)
