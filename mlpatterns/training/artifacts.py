"""Where a trained model lives and how to tell whether it is up to date.

A model directory holds `model.onnx`, its checksum `model.onnx.sha256` (sha256sum's format, so a loader can
verify what it fetched), `labels.json` and `metrics.json`; metrics.json records a fingerprint of
what produced the model (trainer code, parameters, library versions), so a rebuild is skipped when nothing
that shapes the model has changed.
"""

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

MODELS_DIR = Path("models")


@dataclass(frozen=True)
class ModelArtifacts:
    directory: Path

    @property
    def model(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def checksum(self) -> Path:
        return self.directory / "model.onnx.sha256"

    @property
    def labels(self) -> Path:
        return self.directory / "labels.json"

    @property
    def metrics(self) -> Path:
        return self.directory / "metrics.json"

    def registry_paths(self) -> dict[str, str]:
        """What model_db records of this model: where its files are, and the checksum a loader verifies."""
        return {
            "model": str(self.model.resolve()),
            "labels": str(self.labels.resolve()),
            "metrics": str(self.metrics.resolve()),
            "model_sha256": self.checksum.read_text().split()[0],
        }

    def recorded_fingerprint(self) -> str | None:
        if not all(path.exists() for path in (self.model, self.checksum, self.labels, self.metrics)):
            return None
        try:
            return json.loads(self.metrics.read_text()).get("fingerprint")
        except json.JSONDecodeError:
            return None

    def write(self, onnx_bytes: bytes, labels: dict[int, str], metrics: dict) -> None:
        """Write all three files; the model last-but-one and metrics last, so a crash leaves no 'up to date' stamp."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.metrics.unlink(missing_ok=True)
        self.labels.write_text(json.dumps({str(k): v for k, v in labels.items()}, indent=2) + "\n")
        self.model.write_bytes(onnx_bytes)
        self.checksum.write_text(f"{hashlib.sha256(onnx_bytes).hexdigest()}  {self.model.name}\n")
        self.metrics.write_text(json.dumps(metrics, indent=2) + "\n")


def fingerprint(sources: list[Path], params: dict, packages: list[str]) -> str:
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    digest.update(json.dumps(params, sort_keys=True).encode())
    for package in packages:
        digest.update(f"{package}=={version(package)}".encode())
    return digest.hexdigest()[:16]
