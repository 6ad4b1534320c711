"""The prep-pred pattern at work: each service's own view, a prediction per sample digit through both, the
tensor that travels between them, and bad input refused by the service whose job it is."""

import base64

import numpy as np

from mlpatterns.demo import DemoClient
from mlpatterns.images import sample_digits
from mlpatterns.tensors import encode_tensor


def demo(client: DemoClient) -> None:
    prep, pred = client.service("prep"), client.service("pred")
    digits = sample_digits()

    # Each service's own view: prep holds no model (onnxruntime not even imported), pred holds nothing else.
    prep.get("/health")
    prep.get("/metadata")
    pred.get("/health")
    pred.get("/metadata")
    prep.get("/label")  # the labels live with the model: prep asks pred
    prep.get("/predict/test/label")

    # A prediction per sample digit: prep decodes the PNG, pred predicts the 12,288-byte tensor.
    for image in digits.values():
        prep.post("/predict/label", {"data": [image]})
    prep.post("/predict", {"data": [digits["3"]]})
    # ten images, one tensor, one call to pred
    prep.post("/predict/label", {"data": list(digits.values())}, answer={"prediction": list(digits)})

    # What prep sends pred, sent here by hand: raw float32 bytes, shape and dtype in headers.
    body, headers = encode_tensor(np.zeros((1, 3, 32, 32), np.float32))
    answer = client.http.post(pred.base_url + "/predict", content=body, headers=headers)
    print(f"\n  POST pred/predict  <{len(body)} bytes>  {headers}\n  -> {answer.status_code} {answer.text[:200]}")
    counted = [
        line
        for line in client.http.get(pred.base_url + "/metrics").text.splitlines()
        if line.startswith(("prediction_requests_total", "tensor_bytes_total"))
    ]
    print("\n  what pred received (its /metrics):\n    " + "\n    ".join(counted))

    # Bad input, refused where it belongs: images at prep (before any call to pred), JSON and images at pred.
    prep.post("/predict/label", {"data": ["not base64!"]}, expect=422)
    prep.post("/predict/label", {"data": [base64.b64encode(b"no image").decode()]}, expect=422)
    prep.post("/predict/label", {"data": [digits["1"]] * 65}, expect=413)
    pred.post("/predict", {"data": [digits["3"]]}, expect=415)  # pred takes tensors, never images or JSON
