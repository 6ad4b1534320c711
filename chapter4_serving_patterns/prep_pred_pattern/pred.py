"""The prediction service: the digits CNN behind one route that takes tensors, never images.

    POST /predict   application/octet-stream, X-Tensor-Shape: N,3,32,32, X-Tensor-Dtype: float32
                    -> {"model": "cifar10", "prediction": [[p0, ..., p9], ...], "labels": ["3", ...]}

The service is the core's tensor service (`mlpatterns/serving/tensor_service.py`): decoding, resizing and
normalising are the prep service's (prep.py), so this image carries the model and onnxruntime and no Pillow code
path, and scales on the model's CPU alone. `prediction_requests_total{content_type}` counts what arrives on
/predict, so the split shows in the metrics: tensors only.
"""

from fastapi import FastAPI

from mlpatterns.serving.tensor_service import TensorServiceSettings, create_tensor_app


class PredSettings(TensorServiceSettings):
    api_title: str = "prep-pred: prediction service"


def create_app(settings: PredSettings | None = None) -> FastAPI:
    return create_tensor_app(settings or PredSettings())
