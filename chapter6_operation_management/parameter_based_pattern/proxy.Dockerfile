# Parameter-based pattern: the proxy's image (no model). Its backends come from the SERVICE_* variables and its
# parameters from ACTIVATE_*, THRESHOLD_* and DEFAULT_THRESHOLD, which compose and Kubernetes set. The backends
# run chapter 4's microservice horizontal backend image. Build from the repository root after the base image
# (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY chapter6_operation_management/__init__.py chapter6_operation_management/
COPY chapter6_operation_management/parameter_based_pattern chapter6_operation_management/parameter_based_pattern
ENV PORT=9000
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter6_operation_management.parameter_based_pattern.proxy:create_app()"]
