"""The model server's metadata, a prediction per sample digit, the blocking client, and bad inputs refused."""

import base64
import subprocess
import sys
import tempfile
from pathlib import Path

from mlpatterns.demo import DemoClient
from mlpatterns.images import sample_digits

PREDICT = "/v1/models/digits:predict"
CLIENT = "chapter4_serving_patterns.synchronous_pattern.client"


def demo(client: DemoClient) -> None:
    serving = client.service("serving")
    serving.get("/health")
    serving.get("/v1/models/digits")
    serving.get("/v1/models/digits/versions/0/metadata")
    digits = sample_digits()
    # One request per digit, in TF Serving's binary form; the answer is the label, as the original's was.
    for image in digits.values():
        serving.post(PREDICT, {"instances": [{"b64": image}]})
    # columnar: inputs -> outputs
    serving.post(PREDICT, {"inputs": {"image": [digits["3"], digits["5"]]}}, answer={"outputs": ["3", "5"]})
    serving.post(PREDICT, {"signature_name": "probabilities", "instances": [digits["7"]]})
    serving.get("/predict/test")

    # The client blocks until the answer is back, then prints it with the round trip's time.
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "3.png"
        image.write_bytes(base64.b64decode(digits["3"]))
        arguments = ["--image", str(image), "--url", serving.base_url]
        print(f"\n  $ python -m {CLIENT} --image 3.png --url {serving.base_url}")
        result = subprocess.run([sys.executable, "-m", CLIENT, *arguments], capture_output=True, text=True)
        print("  " + (result.stdout + result.stderr).strip().replace("\n", "\n  "))

    # Bad input: a clear 4xx each, and the server keeps serving.
    serving.post(PREDICT, {"instances": [base64.b64encode(b"not an image").decode()]}, expect=422)
    serving.post(PREDICT, {"instances": [""]}, expect=422)
    serving.post(PREDICT, {"instances": ["A" * (50 * 1024 * 1024)]}, expect=413)  # a 50 MB body
    serving.get("/v1/models/inception_v3", expect=404)
    serving.post(PREDICT, {"instances": [digits["9"]]})
