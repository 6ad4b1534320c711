"""The two tables. `items`: the rows to predict, each with its prediction once the job has made it, and the
evidence of who made it (`predicted_by`, a run of the job) and how many times (`prediction_count`). `batch_runs`:
one row per run of the job, with how many rows its model predicted.

The schema itself is made by the Alembic migration in `migrations/versions/`; these tables describe it to the
code, and a test checks that the two agree.
"""

from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

FEATURES = 4  # an iris row: sepal length, sepal width, petal length, petal width (cm)

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

# One dimension, four finite numbers: a row the model can always take, so no row can stop the job.
VALUES_ARE_A_ROW = (
    f'array_ndims("values") = 1 AND cardinality("values") = {FEATURES} AND array_position("values", NULL) IS NULL '
    """AND 'NaN' <> ALL("values") AND 'Infinity' <> ALL("values") AND '-Infinity' <> ALL("values")"""
)

items = Table(
    "items",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("values", ARRAY(REAL), nullable=False),
    Column("species", Text, comment="The known species of a row seeded from the iris data set (NULL: unknown)."),
    Column("seed_index", Integer, unique=True, comment="The seeder's key: seeding the same index twice adds nothing."),
    Column("prediction", ARRAY(REAL), comment="Class probabilities, in class order; NULL until predicted."),
    Column("label", Text, comment="The predicted class's name."),
    Column("predicted_by", Text, comment="The run of the job that predicted the row (batch_runs.run_id)."),
    Column("predicted_datetime", DateTime(timezone=True)),
    Column("prediction_count", Integer, nullable=False, server_default=text("0")),
    Column("created_datetime", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_datetime", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(VALUES_ARE_A_ROW, name="values_are_a_row"),
    # The job's only question, "which rows are pending?", answered from a small index that shrinks as it works.
    Index("ix_items_pending", "id", postgresql_where=text("prediction IS NULL")),
)

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("job_name", Text, nullable=False, comment="The process that ran it (host-pid, or JOB_NAME)."),
    Column("model", Text, nullable=False),
    Column("started_datetime", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_datetime", DateTime(timezone=True), comment="NULL while running, or if the run failed."),
    Column("rows_predicted", Integer, nullable=False, server_default=text("0")),
    Column("chunks", Integer, nullable=False, server_default=text("0")),
)
