"""ImagePreprocessor: every common mode and format in, the model's (C, H, W) float32 out; bad images named."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlpatterns.errors import InvalidInput
from mlpatterns.images import ImagePreprocessor, encode_png, sample_digits
from mlpatterns.predictor import OnnxPredictor
from mlpatterns.training import images as training_images


def encoded(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_round_trip_is_exact():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32)).astype(np.float32)
    (decoded,) = ImagePreprocessor((3, 32, 32))([encode_png(pixels)])
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, pixels)


def test_greyscale_is_replicated_to_three_channels_and_resized():
    grey = Image.new("L", (8, 8), 200)
    (decoded,) = ImagePreprocessor((3, 32, 32))([encoded(grey)])
    assert decoded.shape == (3, 32, 32)
    assert np.all(decoded == 200)


def test_transparent_pixels_lie_on_the_background():
    rgba = Image.new("RGBA", (32, 32), (255, 255, 255, 0))  # white, fully transparent
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    (decoded,) = ImagePreprocessor((3, 32, 32))([encoded(rgba)])
    assert decoded[:, 0, 0].tolist() == [255, 0, 0]
    assert decoded[:, 1:, 1:].max() == 0  # the transparent rest is black, the digits' background


def test_jpeg_palette_and_one_channel_models():
    jpeg = encoded(Image.new("RGB", (16, 16), (0, 128, 255)), "JPEG")
    palette = encoded(Image.new("RGB", (16, 16), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE))
    batch = ImagePreprocessor((3, 16, 16))([jpeg, palette])
    assert batch.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(batch[:, :, 8, 8], [[0, 128, 255]] * 2, atol=3)
    (grey,) = ImagePreprocessor((1, 16, 16))([jpeg])
    assert grey.shape == (1, 16, 16)


def test_mean_and_std_normalise_per_channel():
    (decoded,) = ImagePreprocessor((3, 2, 2), mean=(100, 0, 0), std=(2, 1, 1))([encode_png(np.full((3, 2, 2), 50.0))])
    assert decoded[:, 0, 0].tolist() == [-25.0, 50.0, 50.0]


@pytest.mark.parametrize(
    "item, message",
    [
        ("not base64!", "item 0 is not base64"),
        ("", "item 0 is empty"),
        (base64.b64encode(b"plain text, not an image").decode(), "item 0 is not an image Pillow can read"),
        (encode_png(np.zeros((64, 64))), "item 0 has 64x64 pixels; at most 1024"),
    ],
)
def test_a_bad_image_is_invalid_input_naming_the_item(item, message):
    with pytest.raises(InvalidInput, match=message):
        ImagePreprocessor((3, 32, 32), max_pixels=1024)([item])


def test_the_shipped_sample_digits_are_the_generated_ones_and_the_digits_model_reads_each_right():
    shipped = sample_digits()
    assert list(shipped) == [str(d) for d in range(10)]
    for name, image in training_images.sample_digits().items():
        assert shipped[name] == encode_png(image), f"{name}.png differs: python -m mlpatterns.training.images samples"
    predicted = (
        OnnxPredictor(Path("models/cifar10/model.onnx")).load().predict(ImagePreprocessor()(list(shipped.values())))
    )
    assert predicted.classes.tolist() == list(range(10))


def test_an_empty_batch_is_invalid_input_and_a_message_names_no_object_address():
    with pytest.raises(InvalidInput, match="at least one image"):
        ImagePreprocessor()([])
    with pytest.raises(InvalidInput) as refused:
        ImagePreprocessor()([base64.b64encode(b"hello").decode()])
    assert "0x" not in str(refused.value) and str(refused.value).endswith("cannot identify image file")
