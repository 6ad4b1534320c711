# The base of every training step (the iris training jobs, the model stages of the model-in-image patterns):
# mlpatterns/base plus the lock's [training] category (scikit-learn, skl2onnx, onnx, scipy), hash-checked.
# Serving images never start from it. Build from the repository root after the base image:
#   docker build -f docker/train.Dockerfile -t mlpatterns/train-base:0.1.0 .
FROM mlpatterns/base:0.1.0
USER 0
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes -r /opt/requirements/training.txt
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001
