"""Images in, model input out: decode, convert, resize and normalise, once for every image pattern.

    preprocess = ImagePreprocessor(shape=(3, 32, 32))      # the digits CNN: raw 0..255 pixels, it normalises itself
    batch = preprocess([encode_png(image), ...])            # (N, 3, 32, 32) float32
    plane = DataPlane(predictor, preprocess=preprocess)     # a serving app whose request items are base64 images

Images travel as base64 strings of PNG, JPEG or any format Pillow reads. Every common mode is accepted: an RGBA
image is laid on the background colour (black, as the digits' background), a palette or greyscale one is
converted, and each is resized (bilinear) to the model's rows x columns. A string that is not base64, bytes that
are no image, and images larger than `max_pixels` (a decompression bomb) are refused with a 422 naming the item.
"""

import base64
import binascii
import io
import re
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
from PIL import Image
from pydantic import Field

from mlpatterns.errors import InvalidInput

# One held-out test digit per class (PNG, 32x32 RGB), shipped so that a serving image without scikit-learn has
# them: /predict/test, demos and tests of the image patterns. `python -m mlpatterns.training.images samples`.
SAMPLE_DIGITS = Path(__file__).parent / "data" / "digits"


# One image in a request: its schema says "base64 of an image" (JSON Schema can say no more), which clients and
# the contract tests read; whether the bytes are an image is the preprocessor's to say (a 422 naming the item).
Base64Image = Annotated[
    str,
    Field(
        description="Base64 (standard alphabet) of an image file: PNG, JPEG or any format Pillow reads, any mode.",
        json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/*"},
    ),
]


class ImagePreprocessor:
    """A data-plane preprocess hook: base64 images -> (N, C, H, W) float32, channels first as the CNN takes them.

    `mean` and `std` (one value per channel) normalise the pixels for models that do not do it themselves."""

    item_type = Base64Image  # one request item

    def __init__(
        self,
        shape: tuple[int, int, int] = (3, 32, 32),
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        background: tuple[int, int, int] = (0, 0, 0),
        max_pixels: int = 4096 * 4096,
    ):
        channels, self.rows, self.columns = shape
        if channels not in (1, 3):
            raise ValueError(f"images have 1 or 3 channels, not {channels}")
        self.mode = "L" if channels == 1 else "RGB"
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(-1, 1, 1)
        self.background = background
        self.max_pixels = max_pixels

    def __call__(self, items: list[str]) -> np.ndarray:
        if not items:
            raise InvalidInput("data must hold at least one image")
        batch = np.stack([self.pixels(decode_base64(item, index), index) for index, item in enumerate(items)])
        if self.mean is not None:
            batch = (batch - self.mean) / self.std
        return batch

    def pixels(self, data: bytes, index: int = 0) -> np.ndarray:
        """One encoded image as (C, H, W) float32 pixels 0..255."""
        image = self.open(data, index)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (*self.background, 255))
            image.alpha_composite(rgba)
        image = image.convert(self.mode)
        if image.size != (self.columns, self.rows):
            image = image.resize((self.columns, self.rows), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def open(self, data: bytes, index: int) -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                width, height = image.size
                if width * height > self.max_pixels:
                    raise InvalidInput(f"item {index} has {width}x{height} pixels; at most {self.max_pixels}")
                image.load()
        except InvalidInput:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInput(f"item {index} is too large to decode") from None
        except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for bytes it cannot read
            reason = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", str(error))  # Pillow names its BytesIO object
            raise InvalidInput(f"item {index} is not an image Pillow can read (PNG, JPEG, ...): {reason}") from None
        return image


def decode_base64(item: str, index: int = 0) -> bytes:
    try:
        data = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"item {index} is not base64 (standard alphabet, padded)") from None
    if not data:
        raise InvalidInput(f"item {index} is empty")
    return data


def encode_png(image: np.ndarray) -> str:
    """(C, H, W) or (H, W) pixels 0..255 -> a base64 PNG string (for demos, tests and sample inputs)."""
    array = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_digits() -> dict[str, str]:
    """{"0": base64 PNG, ..., "9": ...}: the shipped held-out digits, one per class, as requests carry them."""
    return {
        path.stem: base64.b64encode(path.read_bytes()).decode("ascii") for path in sorted(SAMPLE_DIGITS.glob("*.png"))
    }
