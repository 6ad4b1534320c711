"""The three tables: a project has models, a model has experiments (one training run each).

The schema itself is made by the Alembic migrations in `migrations/versions/`; these classes describe it to
the ORM, and a test checks that the two agree.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, MetaData, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonObject = dict[str, Any]


def new_id() -> str:
    """A full uuid4 (32 hex digits): unlike the original's first 6 digits, collisions need not be checked."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={  # stable constraint names, so migrations can refer to them
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ix": "ix_%(table_name)s_%(column_0_name)s",
        }
    )
    type_annotation_map = {
        str: String(255),
        datetime: DateTime(timezone=True),
        # jsonb merges with `||`; a Python None is SQL NULL, not the JSON value null.
        JsonObject: JSONB(none_as_null=True),
    }


class Project(Base):
    __tablename__ = "projects"

    project_id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    project_name: Mapped[str] = mapped_column(unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_datetime: Mapped[datetime] = mapped_column(server_default=func.now())


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "model_name"),)

    model_id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.project_id"))
    model_name: Mapped[str]
    description: Mapped[str | None] = mapped_column(Text)
    created_datetime: Mapped[datetime] = mapped_column(server_default=func.now())


class Experiment(Base):
    __tablename__ = "experiments"

    experiment_id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id"), index=True)
    model_version_id: Mapped[str] = mapped_column(index=True)
    parameters: Mapped[JsonObject | None]
    training_dataset: Mapped[str | None] = mapped_column(Text)
    validation_dataset: Mapped[str | None] = mapped_column(Text)
    test_dataset: Mapped[str | None] = mapped_column(Text)
    evaluations: Mapped[JsonObject | None]
    artifact_file_paths: Mapped[JsonObject | None]
    created_datetime: Mapped[datetime] = mapped_column(server_default=func.now())
