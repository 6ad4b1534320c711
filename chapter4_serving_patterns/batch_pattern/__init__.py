"""Batch pattern: a job predicts the rows a table holds, in chunks, on a schedule; an API only reads the table."""
