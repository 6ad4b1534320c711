"""A small CNN for 3x32x32 images (PyTorch, CPU): the model, its training loop and its ONNX export.

The input normalisation is the model's first layer, so training and serving cannot disagree about it: the
exported ONNX model takes raw 0..255 float pixels, NCHW [N, 3, 32, 32], and gives `probabilities` (softmax)
and `logits`, both [N, classes].
"""

import io
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from mlpatterns.training.images import IMAGE_SHAPE, ImageSet

logger = logging.getLogger(__name__)

ONNX_OPSET = 17


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 0.01
    seed: int = 0


class Normalize(nn.Module):
    """(pixels - mean) / std per channel, with the training split's statistics stored in the model."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def small_cnn(mean: list[float], std: list[float], classes: int) -> nn.Sequential:
    """Three conv-batchnorm-relu-pool blocks (32 -> 16 -> 8 -> 4 pixels), global average pooling, one linear layer."""

    def block(inputs: int, outputs: int) -> list[nn.Module]:
        convolution = nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)  # batch norm brings its own bias
        return [convolution, nn.BatchNorm2d(outputs), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        Normalize(mean, std),
        *block(3, 16),
        *block(16, 32),
        *block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def as_tensors(data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.images.astype(np.float32)), torch.from_numpy(data.labels)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode: batch norm uses its running statistics."""
    model.eval()
    pixels, labels = as_tensors(data)
    loss = correct = 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(pixels[start : start + batch_size])
        target = labels[start : start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()
    return loss / len(labels), correct / len(labels)


def fit(model: nn.Module, train: ImageSet, val: ImageSet, config: TrainConfig, log_every: int = 200) -> list[dict]:
    """Adam on cross-entropy with a one-cycle learning rate, in train mode; validation after each epoch in eval mode.

    A progress line per epoch, and every `log_every` batches within one (only large data sets reach it).
    """
    order = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    pixels, labels = as_tensors(train)
    batches = -(-len(labels) // config.batch_size)
    # Warm up to the learning rate, then anneal to almost zero: the last epoch ends on settled weights.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.epochs * batches)
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()  # batch norm learns from each batch (the original trained in eval mode and learnt nothing)
        loss_sum = correct = 0.0
        for step, batch in enumerate(torch.randperm(len(labels), generator=order).split(config.batch_size), 1):
            logits = model(pixels[batch])
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
            correct += (logits.argmax(dim=1) == labels[batch]).sum().item()
            if step % log_every == 0:
                logger.info("epoch %d/%d  batch %d/%d  loss %.4f", epoch, config.epochs, step, batches, loss.item())
        val_loss, val_accuracy = evaluate(model, val)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / len(labels),
                "train_accuracy": correct / len(labels),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        logger.info(
            "epoch %d/%d  loss %.4f  accuracy %.4f  val_loss %.4f  val_accuracy %.4f  (%.1f s)",
            epoch,
            config.epochs,
            *(history[-1][key] for key in list(history[-1])[1:]),
        )
    model.eval()
    return history


def train(
    train_set: ImageSet, val_set: ImageSet, classes: int, mean: list[float], std: list[float], config: TrainConfig
) -> tuple[nn.Module, list[dict]]:
    """Seeded and deterministic: the same data and config give the same weights on the same machine."""
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    model = small_cnn(mean, std, classes)
    return model, fit(model, train_set, val_set, config)


class _Served(nn.Module):
    """What the ONNX graph computes: probabilities first (the score a predictor serves), then the raw logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels)
        return F.softmax(logits, dim=1), logits


def export_onnx(model: nn.Module) -> bytes:
    """The eval-mode model as ONNX, input `input` float [N, 3, 32, 32] with a dynamic batch axis.

    The TorchScript exporter (dynamo=False) needs no extra package; torch's default dynamo exporter needs
    onnxscript, which this project does not install.
    """
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announcing its own end
        torch.onnx.export(
            _Served(model),
            (torch.zeros(1, *IMAGE_SHAPE),),
            buffer,
            dynamo=False,
            input_names=["input"],
            output_names=["probabilities", "logits"],
            opset_version=ONNX_OPSET,
            dynamic_axes={name: {0: "batch"} for name in ("input", "probabilities", "logits")},
        )
    return buffer.getvalue()


@torch.no_grad()
def compare_onnx(model: nn.Module, onnx_bytes: bytes, data: ImageSet) -> dict:
    """The exported graph against the eval-mode torch model on the same raw pixels."""
    model.eval()
    pixels, _ = as_tensors(data)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"input": pixels.numpy()})
    torch_logits = model(pixels).numpy()
    return {
        "onnx_max_abs_diff": float(np.abs(onnx_logits - torch_logits).max()),
        "onnx_agreement": float(np.mean(onnx_logits.argmax(axis=1) == torch_logits.argmax(axis=1))),
    }
