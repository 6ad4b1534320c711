"""Image data sets for the CNN trainers, in CIFAR-10's own layout: uint8 pixels 0..255, NCHW [N, 3, 32, 32].

Nothing is downloaded. The default is scikit-learn's bundled digits (8x8 grey, 10 classes), upsampled to 32x32
and replicated to 3 channels; real CIFAR-10 is read from its python batches in a directory the user names.
A split data set on disk is one directory: `train.npz`, `val.npz`, `test.npz` and `dataset.json`.
"""

import base64
import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

SPLITS = ("train", "val", "test")
DESCRIPTION = "dataset.json"
IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, 3, 32, 32) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices])

    def sha256(self) -> str:
        return hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()[:16]


def digits_as_cifar() -> tuple[ImageSet, list[str]]:
    """scikit-learn's digits, shaped like CIFAR-10: 0..16 grey scaled to 0..255, bilinear 8x8 -> 32x32, 3 channels."""
    digits = load_digits()
    grey = ndimage.zoom(digits.images * (255.0 / 16.0), (1, 4, 4), order=1, mode="nearest", grid_mode=True)
    pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return ImageSet(np.repeat(pixels[:, None], 3, axis=1), digits.target.astype(np.int64)), [str(d) for d in range(10)]


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles: allow only what they hold (dicts, lists, bytes and numpy arrays)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }  # bytes, in protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as file:
        return _CifarUnpickler(file, encoding="bytes").load()


def read_cifar_batch(path: Path) -> ImageSet:
    """One batch file: b"data" uint8 [N, 3072] (1024 red, 1024 green, 1024 blue, row-major) and b"labels"."""
    batch = _unpickle(path)
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *IMAGE_SHAPE)
    return ImageSet(images, np.asarray(batch[b"labels"], dtype=np.int64))


def read_cifar(directory: Path) -> tuple[ImageSet, ImageSet, list[str]]:
    """The training batches (data_batch_1..5, those present), the test batch and the class names."""
    directory = Path(directory)
    train_files = sorted(directory.glob("data_batch_*"))
    missing = [
        name
        for name, ok in [
            ("data_batch_*", train_files),
            ("test_batch", (directory / "test_batch").exists()),
            ("batches.meta", (directory / "batches.meta").exists()),
        ]
        if not ok
    ]
    if missing:
        raise FileNotFoundError(f"{directory}: no {', '.join(missing)} (CIFAR-10's python batches)")
    parts = [read_cifar_batch(path) for path in train_files]
    train = ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    classes = [name.decode() for name in _unpickle(directory / "batches.meta")[b"label_names"]]
    return train, read_cifar_batch(directory / "test_batch"), classes


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): the same share of every class held out, chosen by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out[members[: round(fraction * len(members))]] = True
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def make_splits(cifar_dir: Path | None, val_size: float, test_size: float, seed: int) -> tuple[dict, list[str]]:
    """{"train", "val", "test"} -> ImageSet, and the class names. CIFAR-10 keeps its own test batch."""
    if cifar_dir is None:
        everything, classes = digits_as_cifar()
        rest, test = (everything.subset(i) for i in stratified_split(everything.labels, test_size, seed))
    else:
        rest, test, classes = read_cifar(cifar_dir)
    train, val = (rest.subset(i) for i in stratified_split(rest.labels, val_size, seed))
    return {"train": train, "val": val, "test": test}, classes


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of 0..255 pixels (the model's Normalize layer uses them)."""
    pixels = images.astype(np.float64)
    return pixels.mean(axis=(0, 2, 3)).tolist(), pixels.std(axis=(0, 2, 3)).tolist()


def write_splits(directory: Path, splits: dict[str, ImageSet], classes: list[str], source: dict) -> dict:
    """Write the three splits and dataset.json (shapes, classes, counts, training-split normalisation)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DESCRIPTION).unlink(missing_ok=True)  # written last: its presence means the set is complete
    mean, std = channel_stats(splits["train"].images)
    description = {
        "source": source,
        "classes": classes,
        "layout": "NCHW uint8 0..255",
        "image_shape": list(IMAGE_SHAPE),
        "normalisation": {"mean": mean, "std": std, "computed_on": "train"},
        "splits": {},
    }
    for name, data in splits.items():
        np.savez_compressed(directory / f"{name}.npz", images=data.images, labels=data.labels)
        description["splits"][name] = {
            "file": f"{name}.npz",
            "count": len(data),
            "per_class": np.bincount(data.labels, minlength=len(classes)).tolist(),
            "shape": list(data.images.shape),
            "sha256": data.sha256(),
        }
    (directory / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
    return description


def read_description(directory: Path) -> dict:
    path = Path(directory) / DESCRIPTION
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {DESCRIPTION}; run the preprocess step into it first")
    return json.loads(path.read_text())


def read_split(directory: Path, name: str) -> ImageSet:
    with np.load(Path(directory) / f"{name}.npz") as arrays:
        return ImageSet(arrays["images"], arrays["labels"])


def sample_digits(seed: int = 0, test_size: float = 0.15) -> dict[str, np.ndarray]:
    """One held-out test image per digit class, the most typical one (nearest its class's training mean), from
    the pipeline's default split: the images that ship in `mlpatterns/data/digits/` for the image patterns'
    /predict/test, demos and tests. Chosen without the model, so no model picks its own easy examples."""
    splits, classes = make_splits(None, 0.15, test_size, seed)
    train, test = splits["train"], splits["test"]
    samples = {}
    for label, name in enumerate(classes):
        mean = train.images[train.labels == label].astype(np.float64).mean(axis=0)
        candidates = test.images[test.labels == label]
        distances = ((candidates.astype(np.float64) - mean) ** 2).sum(axis=(1, 2, 3))
        samples[name] = candidates[int(np.argmin(distances))]
    return samples


if __name__ == "__main__":  # python -m mlpatterns.training.images samples: (re)write the shipped digit PNGs
    import sys

    from mlpatterns.images import SAMPLE_DIGITS, encode_png

    if sys.argv[1:] != ["samples"]:
        raise SystemExit("usage: python -m mlpatterns.training.images samples")
    SAMPLE_DIGITS.mkdir(parents=True, exist_ok=True)
    for name, image in sample_digits().items():
        (SAMPLE_DIGITS / f"{name}.png").write_bytes(base64.b64decode(encode_png(image)))
    print(f"wrote {len(list(SAMPLE_DIGITS.glob('*.png')))} digit images to {SAMPLE_DIGITS}")
