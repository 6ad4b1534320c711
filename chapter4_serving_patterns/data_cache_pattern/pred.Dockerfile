# Data cache pattern, the prediction service: the core's tensor service with the digits CNN (model-in-image).
# Build from the repository root after the base images (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY --from=mlpatterns/cifar10_model:0.1.0 /app/models/cifar10 models/cifar10
ENV PORT=8001 \
    MODEL_PATH=models/cifar10/model.onnx \
    API_TITLE="data cache pattern: prediction service"
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "mlpatterns.serving.tensor_service:create_app()"]
