"""The three tables. `prediction_log` and `outlier_log`, as in the original: one row each per answered request,
under the same `log_id` (the request id), written in one transaction; `alerts`: what the monitor found.

The original's `log` JSON column is kept (the rows sent, the answer, the time taken), beside typed columns the
monitor reads. The schema itself is made by the Alembic migration in `migrations/versions/`; these tables
describe it to the code, and a test checks that the two agree.
"""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

prediction_log = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("log_id", sa.Text, primary_key=True, comment="The request id (the answer's job_id)."),
    sa.Column(
        "log", JSONB, nullable=False, comment='{"endpoint", "model_version", "data", "prediction", "elapsed_ms"}'
    ),
    sa.Column("rows", sa.Integer, nullable=False, comment="Rows in the request."),
    sa.Column("created_datetime", sa.DateTime(timezone=True), nullable=False, comment="When the API answered."),
    sa.Index("ix_prediction_log_created_datetime", "created_datetime"),
)

outlier_log = sa.Table(
    "outlier_log",
    metadata,
    sa.Column("log_id", sa.Text, sa.ForeignKey("prediction_log.log_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("log", JSONB, nullable=False, comment='{"outlier_model", "data", "is_outlier", "outlier_score"}'),
    sa.Column("outliers", sa.Integer, nullable=False, comment="Rows flagged as outliers in the request."),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("created_datetime", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_outlier_log_created_datetime", "created_datetime"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("check", sa.Text, nullable=False, comment="mean, psi or outlier_rate"),
    sa.Column("feature", sa.Text, comment="The feature; NULL for the outlier rate."),
    sa.Column("value", sa.REAL, nullable=False),
    sa.Column("threshold", sa.REAL, nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_datetime", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_alerts_window_end", "window_end"),
)
