# Shadow A/B pattern: the mirroring proxy's image (no model), for compose; in Kubernetes Istio's sidecar mirrors.
# Build from the repository root after the base image (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY chapter6_operation_management/__init__.py chapter6_operation_management/
COPY chapter6_operation_management/shadow_ab_pattern chapter6_operation_management/shadow_ab_pattern
ENV PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter6_operation_management.shadow_ab_pattern.proxy:create_app()"]
