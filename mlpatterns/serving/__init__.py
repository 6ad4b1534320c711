"""The HTTP side of serving: app factory, request schemas, middleware, gunicorn settings."""

from mlpatterns.serving.app import create_serving_app

__all__ = ["create_serving_app"]
