# Prep-pred pattern, the prediction service: the digits CNN (model-in-image) behind a route that takes tensors.
# Build from the repository root after the base images (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY --from=mlpatterns/cifar10_model:0.1.0 /app/models/cifar10 models/cifar10
COPY chapter4_serving_patterns/__init__.py chapter4_serving_patterns/
COPY chapter4_serving_patterns/prep_pred_pattern/__init__.py chapter4_serving_patterns/prep_pred_pattern/pred.py chapter4_serving_patterns/prep_pred_pattern/
ENV PORT=8001 \
    MODEL_PATH=models/cifar10/model.onnx
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter4_serving_patterns.prep_pred_pattern.pred:create_app()"]
