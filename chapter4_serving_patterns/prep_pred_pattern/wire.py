"""`python -m chapter4_serving_patterns.prep_pred_pattern.wire`: what the tensor costs on the wire between prep
and pred, as raw bytes (mlpatterns.tensors) and as the JSON list of floats it replaces, for the ten sample digits.
A measurement to read, not a test: sizes are exact, decode times move with the machine."""

import time

import numpy as np
import orjson

from mlpatterns.images import ImagePreprocessor, sample_digits
from mlpatterns.tensors import decode_tensor, encode_tensor


def main() -> None:
    images = list(sample_digits().values())
    pixels = ImagePreprocessor()(images)  # what prep sends this model: raw 0..255 pixels, (10, 3, 32, 32)
    normalised = ((pixels / 255 - 0.45) / 0.226).astype(np.float32)  # what a model wanting mean/std would get
    count = len(images)
    print(f"{count} sample digits; the base64 PNGs prep receives: {sum(map(len, images)) // count} B per image")
    for name, batch in [("raw pixels (this model)", pixels), ("normalised floats", normalised)]:
        body, headers = encode_tensor(batch)
        text = orjson.dumps({"data": batch.tolist()})
        binary_us = seconds_per_call(lambda body=body, headers=headers: decode_tensor(body, headers)) * 1e6
        json_us = seconds_per_call(lambda text=text: np.asarray(orjson.loads(text)["data"], np.float32)) * 1e6
        print(
            f"{name}: binary {len(body) // count:,} B per image, JSON floats {len(text) // count:,} B per image "
            f"({len(text) / len(body):.2f}x); decoding the {count}: binary {binary_us:.1f} us, JSON {json_us:,.0f} us"
        )


def seconds_per_call(call, seconds: float = 0.5) -> float:
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        call()
        calls += 1
    return elapsed / calls


if __name__ == "__main__":
    main()
