"""Template pattern: a new model service is generated from a template and a model, not written by hand."""
