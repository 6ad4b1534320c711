"""Condition-based pattern: a request's `target` header picks the model that serves it."""
