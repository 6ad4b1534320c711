# Microservice horizontal pattern: the backends' image, the shared serving app with the three one-vs-rest iris
# models (model-in-image); compose and Kubernetes run it three times, each with its MODEL_PATH.
# Build from the repository root after the base images (`make build` does both).
FROM mlpatterns/train-base:0.1.0 AS models
RUN python -m mlpatterns.training.iris binary --target setosa --out /app/models \
    && python -m mlpatterns.training.iris binary --target versicolor --out /app/models \
    && python -m mlpatterns.training.iris binary --target virginica --out /app/models

FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY --from=models /app/models/iris_binary_setosa models/iris_binary_setosa
COPY --from=models /app/models/iris_binary_versicolor models/iris_binary_versicolor
COPY --from=models /app/models/iris_binary_virginica models/iris_binary_virginica
COPY chapter4_serving_patterns/__init__.py chapter4_serving_patterns/
COPY chapter4_serving_patterns/horizontal_microservice_pattern chapter4_serving_patterns/horizontal_microservice_pattern
ENV PORT=8000 \
    MODEL_PATH=models/iris_binary_setosa/model.onnx
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter4_serving_patterns.horizontal_microservice_pattern.backend:create_app()"]
