# The runtime every pattern image starts from: Python, the locked dependencies (no torch) and the shared
# core `mlpatterns`, owned by a non-root user. Build from the repository root:
#   docker build -f docker/base.Dockerfile -t mlpatterns/base:0.1.0 .
FROM python:3.11-slim AS requirements
WORKDIR /build
COPY Pipfile Pipfile.lock ./
RUN pip install --no-cache-dir pipenv==2026.10.3 \
    && pipenv requirements --hash > requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=requirements /build/requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --system --uid 10001 --create-home app
WORKDIR /app
COPY mlpatterns mlpatterns
RUN mkdir models && chown app:app /app models
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001
