"""Projects, models and experiments

The original sample's three tables, plus a unique (project_id, model_name), jsonb for the JSON columns
(merged with `||`) and indexes for the lookups.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_datetime() -> sa.Column:
    return sa.Column("created_datetime", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("project_id", sa.String(255)),
        sa.Column("project_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        _created_datetime(),
        sa.PrimaryKeyConstraint("project_id", name="pk_projects"),
        sa.UniqueConstraint("project_name", name="uq_projects_project_name"),
    )
    op.create_table(
        "models",
        sa.Column("model_id", sa.String(255)),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        _created_datetime(),
        sa.PrimaryKeyConstraint("model_id", name="pk_models"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.project_id"], name="fk_models_project_id_projects"),
        sa.UniqueConstraint("project_id", "model_name", name="uq_models_project_id_model_name"),
    )
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(255)),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("model_version_id", sa.String(255), nullable=False),
        sa.Column("parameters", JSONB()),
        sa.Column("training_dataset", sa.Text()),
        sa.Column("validation_dataset", sa.Text()),
        sa.Column("test_dataset", sa.Text()),
        sa.Column("evaluations", JSONB()),
        sa.Column("artifact_file_paths", JSONB()),
        _created_datetime(),
        sa.PrimaryKeyConstraint("experiment_id", name="pk_experiments"),
        sa.ForeignKeyConstraint(["model_id"], ["models.model_id"], name="fk_experiments_model_id_models"),
    )
    op.create_index("ix_experiments_model_id", "experiments", ["model_id"])
    op.create_index("ix_experiments_model_version_id", "experiments", ["model_version_id"])


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_table("models")
    op.drop_table("projects")
