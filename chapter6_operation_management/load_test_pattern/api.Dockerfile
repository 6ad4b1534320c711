# Load test pattern: the API under test, the shared serving app around the iris SVC model (model-in-image).
# Build from the repository root after the base images (`make build` does both).
FROM mlpatterns/train-base:0.1.0 AS model
RUN python -m mlpatterns.training.iris svc --out /app/models

FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY --from=model /app/models/iris_svc models/iris_svc
ENV PORT=8000 \
    MODEL_PATH=models/iris_svc/model.onnx
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "mlpatterns.serving.app:create_app()"]
