"""The template pattern's generator: a complete, runnable pattern directory for one ONNX model.

    python -m chapter4_serving_patterns.template_pattern.template new NAME --model FILE.onnx --labels labels.json \
        [--out DIR] [--port N] [--sample JSON] [--force]

It loads the model with onnxruntime (through the core's OnnxPredictor) to read its input and check it, predicts
the sample to count the model's classes, checks the labels against that count, copies the model, its labels and
the sample into NAME/model/ (so the image built from the project contains them) and renders every file of
templates/ into NAME/. Template files end in `.tmpl`, so nothing here is mistaken for a real Dockerfile, compose
file or manifest by the repository's checks. Placeholders are `{{key}}`, replaced by plain Python: no template
engine is needed for values this simple.
"""

import argparse
import json
import keyword
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from mlpatterns.errors import InvalidInput
from mlpatterns.predictor import OnnxPredictor, load_labels

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).parent / "templates"
NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")  # a Python package name that is also a DNS label with - for _
MAX_NAME = 40
VERSION = "0.1.0"

# Output path (with {name}) -> template. Outside the repository, the project directory is its own build context (so
# it has a .dockerignore) and registers the test kit itself (inside, the root conftest.py does).
FILES = {
    "__init__.py": "init.py.tmpl",
    "app.py": "app.py.tmpl",
    "settings.py": "settings.py.tmpl",
    "demo.py": "demo.py.tmpl",
    "Dockerfile": "Dockerfile.tmpl",
    "docker-compose.yml": "docker-compose.yml.tmpl",
    "Makefile": "Makefile.tmpl",
    "README.md": "README.md.tmpl",
    "manifests/namespace.yml": "namespace.yml.tmpl",
    "manifests/deployment.yml": "deployment.yml.tmpl",
    "manifests/service.yml": "service.yml.tmpl",
    "manifests/hpa.yml": "hpa.yml.tmpl",
    "tests/test_{name}.py": "test_pattern.py.tmpl",
}
OUTSIDE_FILES = {".dockerignore": "dockerignore.tmpl", "tests/conftest.py": "conftest.py.tmpl"}


class TemplateError(Exception):
    """A reason not to generate, said to the user as it is."""


@dataclass(frozen=True)
class CheckedModel:
    path: Path
    labels_path: Path
    labels: dict[int, str]
    sample: list
    input_description: str  # e.g. "float32 [None, 4]"
    classes: int


def check_name(name: str) -> None:
    if not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise TemplateError(
            f"name {name!r} is not usable: use lower-case letters, digits and single underscores, starting with a"
            f" letter, at most {MAX_NAME} characters (it names a Python package and Kubernetes objects)"
        )
    if keyword.iskeyword(name):
        raise TemplateError(f"name {name!r} is a Python keyword")


def check_model(model: Path, labels: Path, sample: list | None) -> CheckedModel:
    """Load the model as the service will, predict the sample, and check the labels against its classes."""
    if not model.is_file():
        raise TemplateError(f"{model}: no such file")
    if not labels.is_file():
        raise TemplateError(f"{labels}: no such file")
    predictor = OnnxPredictor(model)
    try:
        predictor.load()
    except ValueError as error:  # onnxruntime loaded it, but it is not a model this project can serve
        hint = (
            " (scikit-learn classifiers: convert with skl2onnx's zipmap off)" if "no float output" in str(error) else ""
        )
        raise TemplateError(f"{error}{hint}") from None
    except Exception as error:  # onnxruntime's own errors (InvalidProtobuf, Fail) have no common public base
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TemplateError(f"{model}: not an ONNX model onnxruntime can load ({first_line[:200]})") from None
    if sample is not None and not isinstance(sample, list):
        raise TemplateError("--sample must be a JSON list of items (a batch), e.g. [[5.1, 3.5, 1.4, 0.2]]")
    if sample is None:
        if -1 in predictor.feature_shape:
            raise TemplateError(f"{model}: its input has dimensions of any size {predictor.input_shape}; give --sample")
        sample = [_zeros(predictor.feature_shape)]
    try:
        prediction = predictor.predict(sample)
    except InvalidInput as error:
        raise TemplateError(f"--sample does not fit the model: {error.detail}") from None
    except Exception as error:  # onnxruntime's, as above
        raise TemplateError(f"{model}: the model failed on the sample: {str(error).strip()[:200]}") from None
    if prediction.scores.ndim != 2:
        raise TemplateError(f"{model}: its scores have shape {prediction.scores.shape}, not (items, classes)")
    classes = prediction.scores.shape[1]
    try:
        names = load_labels(labels)
        if not all(isinstance(name, str) for name in names.values()):
            raise ValueError("labels must be strings")
    except (ValueError, AttributeError) as error:  # not JSON, not an object, keys not indices
        raise TemplateError(
            f'{labels}: not a JSON object from class index to label, {{"0": "cat", ...}} ({error})'
        ) from None
    if sorted(names) != list(range(classes)):
        raise TemplateError(
            f"{labels}: {len(names)} labels (indices {sorted(names)}), but the model scores {classes} classes:"
            f" give one label for each index 0..{classes - 1}"
        )
    dtype = predictor.input_dtype.__name__
    return CheckedModel(model, labels, names, sample, f"{dtype} {predictor.input_shape}", classes)


def _zeros(shape: list[int]):
    return [_zeros(shape[1:]) for _ in range(shape[0])] if shape else 0.0


def render(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], text)


def generate(
    name: str,
    model: Path,
    labels: Path,
    out: Path = Path("."),
    port: int = 8000,
    sample: list | None = None,
    force: bool = False,
) -> Path:
    """Write the project NAME into OUT (OUT/NAME) and return its directory."""
    check_name(name)
    if not 1024 <= port < 65536:  # a lower port needs root, and the image runs as a user without capabilities
        raise TemplateError(f"port {port}: give a TCP port from 1024 to 65535")
    project = (out / name).resolve()
    if project.exists() and not force:
        raise TemplateError(f"{project} exists: choose another name or --out, or give --force to overwrite its files")
    inside = project.is_relative_to(REPO_ROOT)
    if inside and not all(part.isidentifier() for part in project.relative_to(REPO_ROOT).parts):
        raise TemplateError(f"{project}: inside the repository, every folder on its path must be a Python name")
    if not inside and _taken(name, project):  # outside, the project is a top-level package: it must not shadow
        raise TemplateError(f"name {name!r} is already an importable module: choose another")
    checked = check_model(Path(model), Path(labels), sample)
    values = _values(name, project, inside, port, checked)

    (project / "model").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checked.path, project / "model" / "model.onnx")
    label_json = {str(index): label for index, label in sorted(checked.labels.items())}
    (project / "model" / "labels.json").write_text(json.dumps(label_json, indent=2, ensure_ascii=False) + "\n")
    (project / "model" / "sample.json").write_text(json.dumps(checked.sample) + "\n")
    for target, template in (FILES | ({} if inside else OUTSIDE_FILES)).items():
        path = project / target.format(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render((TEMPLATES / template).read_text(), values))
    return project


def _taken(name: str, project: Path) -> bool:
    """Another module answers to `name` (the project itself, generated before, does not count)."""
    spec = find_spec(name)
    return spec is not None and project not in {Path(p).resolve() for p in spec.submodule_search_locations or []}


def _values(name: str, project: Path, inside: bool, port: int, checked: CheckedModel) -> dict[str, str]:
    if inside:
        # Built like every pattern of the repository: from its root, which the images tier builds from too.
        where = project.relative_to(REPO_ROOT)
        to_root = os.path.relpath(REPO_ROOT, project)
        module, pattern = ".".join(where.parts), str(where)
        context, dockerfile, copy_source = to_root, f"{where}/Dockerfile", str(where)
        include, pythonpath = f"{to_root}/make/pattern.mk", ""
        demo_line = "make demo     # its example requests, printed"
    else:
        # Its own build context; its parent folder must be on PYTHONPATH to import it (the Makefile exports it).
        module, pattern = name, str(project)
        context, dockerfile, copy_source = ".", "Dockerfile", "."
        include = str(REPO_ROOT / "make" / "pattern.mk")
        pythonpath = (
            "# This project lives outside the repository: its parent folder goes on PYTHONPATH to import it.\n"
            f"export PYTHONPATH := {project.parent}$(if $(PYTHONPATH),:$(PYTHONPATH))\n"
        )
        demo_line = "# make demo: only inside the repository (the runner finds a demo by its path there)"
    return {
        "name": name,
        "k8s_name": name.replace("_", "-"),
        "title": name.replace("_", " ").capitalize(),
        "module": module,
        "package_dir": module.replace(".", "/"),
        "pattern": pattern,
        "port": str(port),
        "image": f"mlpatterns/{name}:{VERSION}",
        "context": context,
        "dockerfile": dockerfile,
        "copy_source": copy_source,
        "make_include": include,
        "make_pythonpath": pythonpath,
        "model_file": checked.path.name,
        "model_input": checked.input_description,
        "classes": str(checked.classes),
        "labels": ", ".join(f"{index}: {label}" for index, label in sorted(checked.labels.items())),
        "command": _command(name, port, checked),
        "demo_line": demo_line,
    }


def _command(name: str, port: int, checked: CheckedModel) -> str:
    """The command line that generates this project again (the README shows it); a long sample is left out."""
    words = [name, "--model", str(checked.path), "--labels", str(checked.labels_path), "--port", str(port)]
    sample = json.dumps(checked.sample)
    if len(sample) <= 200:
        words += ["--sample", sample]
    return f"python -m chapter4_serving_patterns.template_pattern.template new {shlex.join(words)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chapter4_serving_patterns.template_pattern.template",
        description="Generate a pattern directory that serves one ONNX model on the shared core.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="generate the pattern directory OUT/NAME")
    new.add_argument("name", help="the project's name: a Python package name (lower case, digits, underscores)")
    new.add_argument("--model", type=Path, required=True, help="the ONNX model to serve")
    new.add_argument("--labels", type=Path, required=True, help='JSON object from class index to label, {"0": ...}')
    new.add_argument("--out", type=Path, default=Path("."), help="the folder to write NAME/ into (default: .)")
    new.add_argument("--port", type=int, default=8000, help="the service's port (default: 8000)")
    new.add_argument("--sample", help="a JSON batch for /metadata and /predict/test (default: one item of zeros)")
    new.add_argument("--force", action="store_true", help="overwrite the files of an existing NAME/")
    args = parser.parse_args(argv)
    try:
        sample = json.loads(args.sample) if args.sample is not None else None
    except json.JSONDecodeError as error:
        print(f"error: --sample is not JSON: {error}", file=sys.stderr)
        return 2
    try:
        project = generate(args.name, args.model, args.labels, args.out, args.port, sample, args.force)
    except TemplateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"generated {project}")
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(project)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
