"""The data the pipeline trains on: digits shaped like CIFAR-10, and real CIFAR-10 batches (no torch needed)."""

import json
import pickle

import numpy as np
import pytest

from chapter2_training.cifar10 import pipeline
from mlpatterns.training import images

CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar_batch(path, first: int, rows: int) -> None:
    """CIFAR-10's layout: b"data" uint8 [N, 3072], 1024 red then 1024 green then 1024 blue per row."""
    red = np.arange(first, first + rows, dtype=np.uint8)[:, None].repeat(1024, axis=1)
    data = np.concatenate([red, np.full((rows, 1024), 100, np.uint8), np.full((rows, 1024), 200, np.uint8)], axis=1)
    batch = {
        b"batch_label": b"tiny",
        b"labels": [(first + i) % 10 for i in range(rows)],
        b"data": data,
        b"filenames": [b"img_%d.png" % (first + i) for i in range(rows)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_cifar_batch(folder / "data_batch_1", 0, 20)
    write_cifar_batch(folder / "data_batch_2", 20, 20)
    write_cifar_batch(folder / "test_batch", 100, 10)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": CLASSES, b"num_vis": 3072}, protocol=2))
    return folder


def test_digits_are_shaped_like_cifar_and_split_deterministically():
    digits, classes = images.digits_as_cifar()
    assert digits.images.shape == (1797, 3, 32, 32) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.images.min() == 0
    assert (digits.images[:, 0] == digits.images[:, 2]).all()  # grey: three equal channels
    assert classes == [str(d) for d in range(10)]
    splits, _ = images.make_splits(None, val_size=0.15, test_size=0.15, seed=0)
    again, _ = images.make_splits(None, val_size=0.15, test_size=0.15, seed=0)
    assert {name: s.sha256() for name, s in splits.items()} == {name: s.sha256() for name, s in again.items()}
    assert sum(len(s) for s in splits.values()) == 1797
    for split in splits.values():  # stratified: every class in every split, in about the same share
        shares = np.bincount(split.labels, minlength=10) / len(split)
        assert np.allclose(shares, 0.1, atol=0.02)


def test_reads_cifar_python_batches(cifar_dir):
    train, test, classes = images.read_cifar(cifar_dir)
    assert classes == [name.decode() for name in CLASSES]
    assert train.images.shape == (40, 3, 32, 32) and test.images.shape == (10, 3, 32, 32)
    assert (train.images[7, 0] == 7).all() and (train.images[7, 1] == 100).all() and (train.images[7, 2] == 200).all()
    assert train.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (test.images[3, 0] == 103).all()


def test_preprocess_step_on_cifar_keeps_its_test_batch(cifar_dir, tmp_path, capsys):
    out = tmp_path / "data"
    assert pipeline.main(["preprocess", "--cifar-dir", str(cifar_dir), "--out", str(out), "--val-size", "0.25"]) == 0
    description = json.loads((out / "dataset.json").read_text())
    assert description["source"]["name"] == "cifar10"
    assert description["classes"][:2] == ["airplane", "automobile"]
    assert {name: s["count"] for name, s in description["splits"].items()} == {"train": 30, "val": 10, "test": 10}
    assert description["splits"]["val"]["per_class"] == [1] * 10
    train = images.read_split(out, "train")
    assert description["normalisation"]["mean"] == pytest.approx(train.images.mean(axis=(0, 2, 3)).tolist())
    assert description["normalisation"]["mean"][1:] == [100.0, 200.0]
    assert "preprocess: cifar10" in capsys.readouterr().out


def test_a_directory_without_batches_is_a_clear_error(tmp_path, capsys):
    assert pipeline.main(["preprocess", "--cifar-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no data_batch_*, test_batch, batches.meta" in capsys.readouterr().err


def test_a_batch_holding_anything_but_data_is_refused(cifar_dir):
    (cifar_dir / "test_batch").write_bytes(pickle.dumps({b"data": pickle.PickleError("not data")}))
    with pytest.raises(pickle.UnpicklingError, match="not part of a CIFAR-10 batch"):
        images.read_cifar(cifar_dir)
