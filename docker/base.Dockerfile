# The two shared bases, from one file, so the package layers of both come before the shared core and an edit of
# `mlpatterns/` rebuilds only the last small layer of each. Build from the repository root:
#   docker build -f docker/base.Dockerfile -t mlpatterns/base:0.1.0 .                       (serving)
#   docker build -f docker/base.Dockerfile --target train -t mlpatterns/train-base:0.1.0 .  (training steps)
# mlpatterns/base: Python, the locked [packages] (onnxruntime, numpy, the web stack; no scikit-learn, scipy, onnx
# or torch) and the shared core, owned by a non-root user. Every serving image starts from it.
# mlpatterns/train-base: the same plus the lock's [training] category (scikit-learn, skl2onnx, onnx, scipy), for
# the training jobs and the model stages of the model-in-image builds; no serving image starts from it. It keeps the
# exported requirements in /opt/requirements/, where the load test's client image takes its [load] category from.
# PYTHON_IMAGE: any Debian-based CPython 3.11.3 or later (the lock was made on 3.11.7; below 3.11.3 redis-py
# needs async-timeout, which the lock does not hold). `make images` passes a stand-in where Docker Hub is out of reach.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /build
COPY Pipfile Pipfile.lock ./
RUN pip install --no-cache-dir pipenv==2026.10.3 \
    && pipenv requirements --hash > requirements.txt \
    && pipenv requirements --hash --categories training > training.txt \
    && pipenv requirements --hash --categories load > load.txt

# Slim: the venv has no pip or setuptools of its own (the interpreter's pip installs into it with --python), no
# packages' test suites, C sources, headers or type stubs; pip keeps no cache.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=requirements /build/requirements.txt /build/training.txt /build/load.txt /opt/requirements/
RUN python -c 'import sys; sys.exit(None if sys.version_info >= (3, 11, 3) else "Python 3.11.3 or later is needed, not " + sys.version)' \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes -r /opt/requirements/requirements.txt \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' \) -delete \
    && useradd --system --uid 10001 --create-home app
WORKDIR /app
RUN mkdir models && chown app:app /app models

# Training keeps onnxruntime whole: its quantization tools (edge_ai's int8 model) need onnx, installed here.
FROM runtime AS train
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes -r /opt/requirements/training.txt
COPY mlpatterns mlpatterns
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001

# Serving: the same venv without onnxruntime's offline tools (quantization, transformer optimisers), which need
# onnx, a training package absent here. Copied from a stage that removed them, so no layer carries them.
FROM runtime AS serving-venv
RUN rm -r /opt/venv/lib/python3.*/site-packages/onnxruntime/transformers \
        /opt/venv/lib/python3.*/site-packages/onnxruntime/quantization /opt/venv/lib/python3.*/site-packages/onnxruntime/tools

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=serving-venv /opt/venv /opt/venv
RUN useradd --system --uid 10001 --create-home app
WORKDIR /app
RUN mkdir models && chown app:app /app models
COPY mlpatterns mlpatterns
USER 10001
