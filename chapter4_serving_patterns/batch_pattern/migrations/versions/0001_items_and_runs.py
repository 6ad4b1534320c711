"""Items and batch runs

The original sample's `items` table (id, values, prediction, created/updated times) in PostgreSQL, plus what the
batch job needs to be safe and checkable: the predicted label, the run that predicted each row and how many
times it was predicted, the seeder's key, the known species of seeded rows, a partial index of the pending rows,
and a table of the job's runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# One dimension, four finite numbers: a row the model can always take, so no row can stop the job.
VALUES_ARE_A_ROW = (
    'array_ndims("values") = 1 AND cardinality("values") = 4 AND array_position("values", NULL) IS NULL '
    """AND 'NaN' <> ALL("values") AND 'Infinity' <> ALL("values") AND '-Infinity' <> ALL("values")"""
)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("values", ARRAY(sa.REAL()), nullable=False),
        sa.Column(
            "species", sa.Text(), comment="The known species of a row seeded from the iris data set (NULL: unknown)."
        ),
        sa.Column("seed_index", sa.Integer(), comment="The seeder's key: seeding the same index twice adds nothing."),
        sa.Column("prediction", ARRAY(sa.REAL()), comment="Class probabilities, in class order; NULL until predicted."),
        sa.Column("label", sa.Text(), comment="The predicted class's name."),
        sa.Column("predicted_by", sa.Text(), comment="The run of the job that predicted the row (batch_runs.run_id)."),
        sa.Column("predicted_datetime", sa.DateTime(timezone=True)),
        sa.Column("prediction_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _now("created_datetime"),
        _now("updated_datetime"),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.UniqueConstraint("seed_index", name="uq_items_seed_index"),
        sa.CheckConstraint(VALUES_ARE_A_ROW, name="ck_items_values_are_a_row"),
    )
    op.create_index("ix_items_pending", "items", ["id"], postgresql_where=sa.text("prediction IS NULL"))
    op.create_table(
        "batch_runs",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("job_name", sa.Text(), nullable=False, comment="The process that ran it (host-pid, or JOB_NAME)."),
        sa.Column("model", sa.Text(), nullable=False),
        _now("started_datetime"),
        sa.Column("finished_datetime", sa.DateTime(timezone=True), comment="NULL while running, or if the run failed."),
        sa.Column("rows_predicted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_batch_runs"),
    )


def downgrade() -> None:
    op.drop_table("batch_runs")
    op.drop_table("items")
