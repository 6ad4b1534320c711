"""One backend of the circuit breaker pattern: the shared serving app around the iris SVC model, nothing more.

Three of these (compose: iris_a, iris_b, iris_c; Kubernetes: the 3 replicas of iris-svc) stand behind the
breaker; the breaker itself is HAProxy's configuration (haproxy/haproxy.cfg), not Python.
"""

from fastapi import FastAPI

from mlpatterns.serving.app import create_serving_app
from mlpatterns.settings import ModelServingSettings


def create_app() -> FastAPI:
    return create_serving_app(ModelServingSettings())
