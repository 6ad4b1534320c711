# Microservice horizontal pattern: the proxy's image (no model). Its backends come from the SERVICE_* variables
# that compose and Kubernetes set. Build from the repository root after the base image (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY chapter4_serving_patterns/__init__.py chapter4_serving_patterns/
COPY chapter4_serving_patterns/horizontal_microservice_pattern chapter4_serving_patterns/horizontal_microservice_pattern
ENV PORT=9000
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter4_serving_patterns.horizontal_microservice_pattern.proxy:create_app()"]
