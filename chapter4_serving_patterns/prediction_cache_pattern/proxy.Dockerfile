# Prediction cache pattern, the proxy: the HTTP API, the items (they ship inside the mlpatterns package) and their
# preprocessing, and the cache. No model in this image. Build from the repository root after the base image
# (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY chapter4_serving_patterns/__init__.py chapter4_serving_patterns/
COPY chapter4_serving_patterns/prediction_cache_pattern/__init__.py chapter4_serving_patterns/prediction_cache_pattern/proxy.py chapter4_serving_patterns/prediction_cache_pattern/
ENV PORT=8000 \
    PREDICTION_URL=http://pred:8001 \
    REDIS_URL=redis://redis:6379/0
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter4_serving_patterns.prediction_cache_pattern.proxy:create_app()"]
