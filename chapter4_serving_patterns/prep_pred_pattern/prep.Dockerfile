# Prep-pred pattern, the preprocessing service: the image API (decode, resize, call pred). No model in this
# image and no model file read by it; onnxruntime is in the base but never imported. Build from the repository
# root after the base image (`make build` does both).
FROM mlpatterns/base:0.1.0
WORKDIR /app
COPY chapter4_serving_patterns/__init__.py chapter4_serving_patterns/
COPY chapter4_serving_patterns/prep_pred_pattern/__init__.py chapter4_serving_patterns/prep_pred_pattern/prep.py chapter4_serving_patterns/prep_pred_pattern/
ENV PORT=8000 \
    PREDICTION_URL=http://pred:8001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "mlpatterns.healthcheck", "/health"]
CMD ["gunicorn", "--config", "python:mlpatterns.serving.gunicorn_conf", "chapter4_serving_patterns.prep_pred_pattern.prep:create_app()"]
