"""The echo floor: the least a FastAPI JSON POST costs on the serving stack.

A plain FastAPI app whose one route parses the JSON body into a dict and returns it, so FastAPI reads,
validates and serializes as it does for any route. The bench runs it under the same gunicorn config module,
worker class and worker count as the pattern it is compared with:

    gunicorn -c python:mlpatterns.serving.gunicorn_conf "mlpatterns.bench.echo:create_echo_app()"
"""

from fastapi import FastAPI


def create_echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict):
        return body

    return app
