"""The HTTP side of serving: app factory (`app.py`), request schemas, middleware, gunicorn settings.

Nothing is imported here on purpose: gunicorn loads `mlpatterns.serving.gunicorn_conf` in its master process,
and prometheus_client must not be imported there before the config has set PROMETHEUS_MULTIPROC_DIR.
"""
