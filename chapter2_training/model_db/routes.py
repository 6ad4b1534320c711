"""The HTTP API: the original sample's paths, each route one CRUD call. Names may contain `/` (`{name:path}`)."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

from chapter2_training.model_db import crud
from chapter2_training.model_db.schemas import (
    ArtifactFilePathsMerge,
    EvaluationsMerge,
    ExperimentCreate,
    ExperimentOut,
    Health,
    Key,
    ModelCreate,
    ModelOut,
    Page,
    ProjectCreate,
    ProjectOut,
)
from mlpatterns.errors import error_responses


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
PageDep = Annotated[Page, Query()]  # ?limit=&offset=&order= on every list route


# Every route asks the database: a 503 when it is down. A route that looks a row up by a key of the request says
# 404 (`NOT_FOUND`); the core documents the 400/408/413/422 of bodies and parameters.
UNAVAILABLE = error_responses(503)
NOT_FOUND = error_responses(404)

health = APIRouter(tags=["health"], responses=UNAVAILABLE)  # mounted under /v{API_VERSION}, as in the original
projects = APIRouter(prefix="/projects", tags=["projects"], responses=UNAVAILABLE)
models = APIRouter(prefix="/models", tags=["models"], responses=UNAVAILABLE)
experiments = APIRouter(prefix="/experiments", tags=["experiments"], responses=UNAVAILABLE)


@health.get("/health", response_model=Health)
def health_check(session: SessionDep):
    """Ready when the database answers (a 503 otherwise)."""
    session.execute(text("SELECT 1"))
    return {"health": "ok"}


@projects.get("/all", response_model=list[ProjectOut])
def all_projects(session: SessionDep, page: PageDep):
    return crud.list_projects(session=session, page=page)


@projects.get("/id/{project_id}", response_model=ProjectOut, responses=NOT_FOUND)
def project_by_id(session: SessionDep, project_id: Key):
    return crud.get_project(session=session, project_id=project_id)


@projects.get("/name/{project_name:path}", response_model=ProjectOut, responses=NOT_FOUND)
def project_by_name(session: SessionDep, project_name: Key):
    return crud.get_project_by_name(session=session, project_name=project_name)


@projects.post("", response_model=ProjectOut)
def add_project(session: SessionDep, project_in: ProjectCreate):
    """Idempotent on `project_name`: the existing project is returned unchanged."""
    return crud.create_project(session=session, project_in=project_in)


@models.get("/all", response_model=list[ModelOut])
def all_models(session: SessionDep, page: PageDep):
    return crud.list_models(session=session, page=page)


@models.get("/id/{model_id}", response_model=ModelOut, responses=NOT_FOUND)
def model_by_id(session: SessionDep, model_id: Key):
    return crud.get_model(session=session, model_id=model_id)


@models.get("/project-id/{project_id}", response_model=list[ModelOut], responses=NOT_FOUND)
def models_by_project_id(session: SessionDep, project_id: Key, page: PageDep):
    project = crud.get_project(session=session, project_id=project_id)
    return crud.list_models_of_project(session=session, project=project, page=page)


@models.get("/name/{model_name:path}", response_model=list[ModelOut])
def models_by_name(session: SessionDep, model_name: Key, page: PageDep):
    """Models of this name in every project."""
    return crud.list_models_named(session=session, model_name=model_name, page=page)


@models.get("/project-name/{project_name:path}", response_model=list[ModelOut], responses=NOT_FOUND)
def models_by_project_name(session: SessionDep, project_name: Key, page: PageDep):
    project = crud.get_project_by_name(session=session, project_name=project_name)
    return crud.list_models_of_project(session=session, project=project, page=page)


@models.post("", response_model=ModelOut, responses=NOT_FOUND)
def add_model(session: SessionDep, model_in: ModelCreate):
    """Idempotent on (`project_id`, `model_name`); 404 when the project does not exist."""
    return crud.create_model(session=session, model_in=model_in)


@experiments.get("/all", response_model=list[ExperimentOut])
def all_experiments(session: SessionDep, page: PageDep):
    return crud.list_experiments(session=session, page=page)


@experiments.get("/id/{experiment_id}", response_model=ExperimentOut, responses=NOT_FOUND)
def experiment_by_id(session: SessionDep, experiment_id: Key):
    return crud.get_experiment(session=session, experiment_id=experiment_id)


@experiments.get("/model-version-id/{model_version_id}", response_model=ExperimentOut, responses=NOT_FOUND)
def experiment_by_model_version_id(session: SessionDep, model_version_id: Key):
    return crud.get_experiment_by_model_version(session=session, model_version_id=model_version_id)


@experiments.get("/model-id/{model_id}", response_model=list[ExperimentOut], responses=NOT_FOUND)
def experiments_by_model_id(session: SessionDep, model_id: Key, page: PageDep):
    model = crud.get_model(session=session, model_id=model_id)
    return crud.list_experiments_of_model(session=session, model=model, page=page)


@experiments.get("/project-id/{project_id}", response_model=list[ExperimentOut], responses=NOT_FOUND)
def experiments_by_project_id(session: SessionDep, project_id: Key, page: PageDep):
    project = crud.get_project(session=session, project_id=project_id)
    return crud.list_experiments_of_project(session=session, project=project, page=page)


@experiments.post("", response_model=ExperimentOut, responses=NOT_FOUND)
def add_experiment(session: SessionDep, experiment_in: ExperimentCreate):
    """A new experiment every time; 404 when the model does not exist."""
    return crud.create_experiment(session=session, experiment_in=experiment_in)


@experiments.post("/evaluations/{experiment_id}", response_model=ExperimentOut, responses=NOT_FOUND)
def merge_evaluations(session: SessionDep, experiment_id: Key, body: EvaluationsMerge):
    """Adds the keys to the stored evaluations ({"acc": 0.9} then {"f1": 0.8} keeps both)."""
    return crud.merge_evaluations(session=session, experiment_id=experiment_id, evaluations=body.evaluations)


@experiments.post("/artifact-file-paths/{experiment_id}", response_model=ExperimentOut, responses=NOT_FOUND)
def merge_artifact_file_paths(session: SessionDep, experiment_id: Key, body: ArtifactFilePathsMerge):
    """Adds the keys to the stored artifact file paths."""
    return crud.merge_artifact_file_paths(
        session=session, experiment_id=experiment_id, artifact_file_paths=body.artifact_file_paths
    )


api_router = APIRouter(prefix="/api")
for router in (projects, models, experiments):
    api_router.include_router(router)
