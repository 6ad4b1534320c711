"""The edge client at work: no request to send, the model runs on the device. The runner has run the compose
file's `quantize` job (the int8 model) and started its `edge` job, whose output it keeps to itself; this demo runs
the same client in process so its output shows: generated camera frames through both models, one per 500 ms,
the top 3 of each, then the size and latency report; then a folder holding the ten sample digits and a file that
is no image, which is reported and skipped."""

import base64
import tempfile
from pathlib import Path

from chapter4_serving_patterns.edge_ai_pattern import edge, quantize
from mlpatterns.demo import DemoClient
from mlpatterns.images import sample_digits


def demo(client: DemoClient) -> None:
    assert not client.urls, "the edge pattern serves nothing"
    _step("the int8 model (made by the quantize job, skipped when up to date)", quantize.main([]))
    _step("camera frames, both models, throttle 500 ms, top 3", edge.main(["--frames", "6", "--model", "both"]))
    with tempfile.TemporaryDirectory() as folder:
        for digit, png in sample_digits().items():
            (Path(folder) / f"digit-{digit}.png").write_bytes(base64.b64decode(png))
        (Path(folder) / "notes.txt").write_text("not an image\n")
        args = ["--images", folder, "--model", "int8", "--throttle-ms", "0"]
        _step("a folder of images, the int8 model only, no throttle", edge.main(args))


def _step(title: str, code: int) -> None:
    print(f"  -> {title}: exit {code}\n", flush=True)
    if code != 0:
        raise RuntimeError(f"{title}: exit {code}")
