"""Prediction log, outlier log and alerts

The original's two tables (log_id, log JSON, created_datetime), in PostgreSQL with JSONB, typed counts for the
monitor, an index on the time it queries by, and outlier_log tied to its prediction_log row; plus the alerts the
monitor raises (the original only logged them).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("log_id", sa.Text(), nullable=False, comment="The request id (the answer's job_id)."),
        sa.Column(
            "log",
            JSONB(),
            nullable=False,
            comment='{"endpoint", "model_version", "data", "prediction", "elapsed_ms"}',
        ),
        sa.Column("rows", sa.Integer(), nullable=False, comment="Rows in the request."),
        sa.Column("created_datetime", sa.DateTime(timezone=True), nullable=False, comment="When the API answered."),
        sa.PrimaryKeyConstraint("log_id", name="pk_prediction_log"),
    )
    op.create_index("ix_prediction_log_created_datetime", "prediction_log", ["created_datetime"])
    op.create_table(
        "outlier_log",
        sa.Column("log_id", sa.Text(), nullable=False),
        sa.Column("log", JSONB(), nullable=False, comment='{"outlier_model", "data", "is_outlier", "outlier_score"}'),
        sa.Column("outliers", sa.Integer(), nullable=False, comment="Rows flagged as outliers in the request."),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["log_id"], ["prediction_log.log_id"], name="fk_outlier_log_log_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("log_id", name="pk_outlier_log"),
    )
    op.create_index("ix_outlier_log_created_datetime", "outlier_log", ["created_datetime"])
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("check", sa.Text(), nullable=False, comment="mean, psi or outlier_rate"),
        sa.Column("feature", sa.Text(), comment="The feature; NULL for the outlier rate."),
        sa.Column("value", sa.REAL(), nullable=False),
        sa.Column("threshold", sa.REAL(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_datetime", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_window_end", "alerts", ["window_end"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("outlier_log")
    op.drop_table("prediction_log")
