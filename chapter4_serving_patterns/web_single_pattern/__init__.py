"""Web single pattern: one web server holds the REST API, the pre/post-processing and the model."""
