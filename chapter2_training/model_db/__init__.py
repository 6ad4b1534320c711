"""Model management DB: a REST registry of projects, models and experiments on PostgreSQL (book chapter 2)."""
