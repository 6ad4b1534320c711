"""The template pattern's own service: at start, generate a service for the iris SVC model, then serve it.

    python -m chapter4_serving_patterns.template_pattern.example

This is what `make up`, `make demo`, `make c_up` and `make deploy` run for this directory, so each of them shows
a freshly generated project serving real predictions. The project is written to a new temporary directory (the
run's scratch space locally, /tmp in a container) and started with the command its own docker-compose.yml gives,
by exec: gunicorn takes this process's place, its pid and its signals.
"""

import os
import sys
import tempfile
from pathlib import Path

import yaml

from chapter4_serving_patterns.template_pattern.template import generate

NAME = "iris_example"
MODEL = Path("models/iris_svc/model.onnx")  # from the repository root locally, from /app in the image
LABELS = Path("models/iris_svc/labels.json")
SAMPLE = [[5.1, 3.5, 1.4, 0.2]]


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="template-example-"))
    project = generate(NAME, MODEL, LABELS, out, sample=SAMPLE)
    print(f"generated {project} from {MODEL}", flush=True)
    command = yaml.safe_load((project / "docker-compose.yml").read_text())["services"]["web"]["command"]
    # Outside the repository the generated package is top-level: its parent folder goes on the path.
    pythonpath = os.pathsep.join(filter(None, [str(out), os.environ.get("PYTHONPATH")]))
    os.execvpe(command[0], command, {**os.environ, "PYTHONPATH": pythonpath})


if __name__ == "__main__":
    sys.exit(main())
