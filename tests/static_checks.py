"""The checks behind tests/test_static.py, all offline: finding files, running the validators, reading
Dockerfiles, compose files and Kubernetes manifests. Every check returns a list of error messages (empty: ok).
"""

import functools
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import yaml

from mlpatterns.runner.compose import image_name, parse_environment, parse_ports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's tools: hadolint, check-jsonschema
ISTIO_CRDS = Path(__file__).parent / "schemas" / "istio-crd-all.gen.yaml"
K8S_VERSION = "1.33"  # the Kubernetes release the manifests must be valid for
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "__pycache__", "build"}  # build/ holds image layers
PROJECT_IMAGES = "mlpatterns/"  # images built from this repository (the rest are backing services)


# --- finding files --------------------------------------------------------------------------------------


def rel(path: Path) -> str:
    """A path relative to the repository root (test ids and messages)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dockerfiles(root: Path = ROOT) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [Path(folder) / f for f in sorted(files) if f == "Dockerfile" or f.endswith(".Dockerfile")]
    return found


def compose_files(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("chapter*/*/docker-compose.yml"))


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml"))


def manifest_files(root: Path = ROOT) -> list[Path]:
    return [path for folder in sorted(root.glob("chapter*/*/manifests")) for path in _yaml_files(folder)]


def manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def pattern_manifests(pattern_dir: Path) -> list[tuple[Path, dict]]:
    """(file, document) for every document under the pattern's manifests/."""
    return [(path, doc) for path in _yaml_files(pattern_dir / "manifests") for doc in manifests(path)]


def deployment_containers(docs) -> list[tuple[dict, dict]]:
    """(Deployment, container) pairs."""
    return [(d, c) for d in docs if d.get("kind") == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]


# --- external validators --------------------------------------------------------------------------------


def _run(*command: str) -> list[str]:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return [] if result.returncode == 0 else [(result.stdout + result.stderr).strip()]


def hadolint(dockerfile: Path) -> list[str]:
    """hadolint with its default rules (a `.hadolint.yaml` at the repository root, if any, is read)."""
    return _run(str(BIN / "hadolint"), "--no-color", str(dockerfile))


def compose_schema(compose_file: Path) -> list[str]:
    """The compose-spec JSON schema that check-jsonschema ships (no download)."""
    return _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose_file))


# --- Kubernetes and Istio schemas -----------------------------------------------------------------------


def validate_manifest(doc: dict) -> list[str]:
    """Core kinds: kubernetes-validate, strict (unknown fields fail). Istio kinds: the vendored CRDs."""
    what = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
    if not (doc.get("apiVersion") and doc.get("kind")):
        return [f"{what}: a document needs apiVersion and kind"]
    if doc["apiVersion"].split("/")[0].endswith(".istio.io"):
        return [f"{what}: {e}" for e in validate_istio(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{what}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{what}: no Kubernetes {K8S_VERSION} schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return []


@functools.cache
def istio_crds() -> dict[tuple[str, str], dict]:
    """(group, kind) -> the CRD's spec, from the vendored file."""
    docs = yaml.load_all(ISTIO_CRDS.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {(d["spec"]["group"], d["spec"]["names"]["kind"]): d["spec"] for d in docs if d}


def strict_schema(schema: dict) -> dict:
    """A CRD's openAPIV3Schema as a JSON schema that rejects unknown fields (as `kubectl apply` does)."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict_schema(s) for name, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict_schema(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict_schema(s) for s in schema[key]]
    if schema.get("x-kubernetes-int-or-string"):
        schema["type"] = ["integer", "string"]
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


@functools.cache
def _istio_validator(group: str, kind: str, version: str) -> jsonschema.Draft4Validator:
    crd_version = next(v for v in istio_crds()[group, kind]["versions"] if v["name"] == version)
    schema = strict_schema(crd_version["schema"]["openAPIV3Schema"])
    schema["properties"] |= {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    return jsonschema.Draft4Validator(schema)  # OpenAPI 3.0 schemas are close to draft 4


def validate_istio(doc: dict) -> list[str]:
    group, _, version = doc["apiVersion"].partition("/")
    crd = istio_crds().get((group, doc.get("kind")))
    if crd is None:
        return [f"{doc['apiVersion']} has no kind {doc.get('kind')!r} in the vendored Istio CRDs"]
    served = [v["name"] for v in crd["versions"] if v.get("served")]
    wanted = "v1" if "v1" in served else next(v["name"] for v in crd["versions"] if v.get("storage"))
    if version != wanted:
        return [f"apiVersion {doc['apiVersion']} is an old version: use {group}/{wanted}"]
    errors = sorted(_istio_validator(group, doc["kind"], version).iter_errors(doc), key=lambda e: list(e.path))
    return [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors]


# --- rules the design states for manifests --------------------------------------------------------------

API_VERSIONS = {"HorizontalPodAutoscaler": "autoscaling/v2", "CronJob": "batch/v1"}


def manifest_rules(doc: dict) -> list[str]:
    """Current API versions; every Deployment container has resource requests and both probes."""
    errors = []
    if doc.get("kind") in API_VERSIONS and doc.get("apiVersion") != API_VERSIONS[doc["kind"]]:
        errors.append(
            f"{doc['kind']} {doc['metadata']['name']}: use apiVersion {API_VERSIONS[doc['kind']]},"
            f" not {doc.get('apiVersion')}"
        )
    for deployment, container in deployment_containers([doc]):
        missing = [key for key in ("readinessProbe", "livenessProbe") if key not in container]
        if not container.get("resources", {}).get("requests"):
            missing.append("resources.requests")
        if missing:
            errors.append(
                f"Deployment {deployment['metadata']['name']}: container {container['name']} has no"
                f" {', '.join(missing)}"
            )
    return errors


def hpa_rules(docs: list[dict]) -> list[str]:
    """Every Deployment that runs a project image (not a backing service like Redis) has an HPA."""
    targets = {
        (d["spec"]["scaleTargetRef"]["kind"], d["spec"]["scaleTargetRef"]["name"])
        for d in docs
        if d.get("kind") == "HorizontalPodAutoscaler"
    }
    ours = {d["metadata"]["name"] for d, c in deployment_containers(docs) if c["image"].startswith(PROJECT_IMAGES)}
    return [
        f"Deployment {name} has no HorizontalPodAutoscaler targeting it by name"
        for name in sorted(ours)
        if ("Deployment", name) not in targets
    ]


# --- local run, compose, image and Kubernetes agree -----------------------------------------------------


def dockerfile_stage(dockerfile: Path, target: str | None = None) -> dict[str, str]:
    """Instruction -> its (last) arguments in build stage `target` (default: the final stage); continuation
    lines joined, comments dropped."""
    instructions, current = [], ""
    for line in dockerfile.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, args = (current + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"] + [len(instructions)]
    if target is None:
        return dict(instructions[starts[-2] :])
    for start, end in itertools.pairwise(starts):
        if re.search(rf"\s+AS\s+{re.escape(target)}$", instructions[start][1], re.IGNORECASE):
            return dict(instructions[start:end])
    raise ValueError(f"{dockerfile} has no stage {target!r}")


def exec_form(args: str | None) -> list | str | None:
    """A CMD in exec form (a JSON array) as a list; shell form stays a string."""
    try:
        return json.loads(args) if args else None
    except json.JSONDecodeError:
        return args


def built_services(compose_file: Path) -> list[str]:
    """The compose services built from this repository (they have a `build:` section)."""
    return [name for name, s in yaml.safe_load(compose_file.read_text())["services"].items() if "build" in s]


def consistency(compose_file: Path, name: str) -> list[str]:
    """A built compose service against the Dockerfile it builds and the Kubernetes Deployment of its image."""
    service = yaml.safe_load(compose_file.read_text())["services"][name]
    build = service["build"] if isinstance(service["build"], dict) else {"context": service["build"]}
    dockerfile = (compose_file.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
    if not dockerfile.is_file():
        return [f"{rel(compose_file)}: service {name} builds {dockerfile}, which does not exist"]
    image = dockerfile_stage(dockerfile, build.get("target"))
    command = service.get("command")
    environment = parse_environment(service.get("environment"))
    ports = [target for _, target in parse_ports(service.get("ports"))]
    healthcheck = (service.get("healthcheck") or {}).get("test")
    # The healthcheck asks a URL, or a path on 127.0.0.1:$PORT (`python -m mlpatterns.healthcheck /health`).
    health_url = urlparse(next((arg for arg in healthcheck or [] if re.match(r"https?://|/", arg)), ""))
    errors = []

    def same(what: str, compose_value, other_file: Path, other_value) -> None:
        if compose_value != other_value:
            errors.append(
                f"service {name}: {what} differ\n  {rel(compose_file)}: {compose_value!r}\n"
                f"  {rel(other_file)}: {other_value!r}"
            )

    # (a) the local runner and compose run the image's CMD
    same("command and CMD", command, dockerfile, exec_form(image.get("CMD")))
    # (b) one port: compose's target port, EXPOSE, the PORT setting (and the healthcheck URL's port)
    same("target port and EXPOSE", ports, dockerfile, [int(p.split("/")[0]) for p in image.get("EXPOSE", "").split()])
    if ports:
        same("target port and environment PORT", [str(p) for p in ports], compose_file, [environment.get("PORT")])
    if ports and health_url.port:
        same("target port and healthcheck URL port", ports, compose_file, [health_url.port])
    # (c) the same healthcheck
    docker_health = re.search(r"\bCMD\s+(.*)$", image.get("HEALTHCHECK", ""))
    docker_test = exec_form(docker_health.group(1)) if docker_health else None
    same(
        "healthcheck and HEALTHCHECK CMD",
        healthcheck,
        dockerfile,
        ["CMD", *docker_test] if isinstance(docker_test, list) else docker_test and ["CMD-SHELL", docker_test],
    )
    # (d) the Kubernetes Deployment running the same image (keys in x-local.environment are local-only)
    local_only = set(parse_environment((service.get("x-local") or {}).get("environment")))
    for path, doc in pattern_manifests(compose_file.parent):
        for _, container in deployment_containers([doc]):
            if container["image"] != service.get("image"):
                continue
            # A value from a Secret (valueFrom) stands in for the compose literal: only its name is compared.
            from_secret = {e["name"] for e in container.get("env", []) if "valueFrom" in e}
            env = {e["name"]: e.get("value") for e in container.get("env", []) if e["name"] not in local_only}
            same("command", command, path, container.get("command"))
            same(
                "environment",
                {k: None if k in from_secret else v for k, v in environment.items() if k not in local_only},
                path,
                env,
            )
            same("target port and containerPort", ports, path, [p["containerPort"] for p in container.get("ports", [])])
            probe = container.get("readinessProbe", {})
            if health_url.path or "exec" not in probe:
                same(
                    "healthcheck URL path and readinessProbe path",
                    health_url.path,
                    path,
                    probe.get("httpGet", {}).get("path"),
                )
            else:  # a service without a port (a queue worker): the same command, as an exec probe
                same("healthcheck and readinessProbe command", (healthcheck or [])[1:], path, probe["exec"]["command"])
    return errors


def unbuilt_images(compose_file: Path) -> list[str]:
    """Project images the pattern's Deployments run must be built by its compose file (catches tag drift)."""
    services = yaml.safe_load(compose_file.read_text())["services"].values()
    built = {s.get("image") for s in services if "build" in s}
    return [
        f"{rel(path)}: Deployment {d['metadata']['name']} runs {c['image']}, which {rel(compose_file)} does not build"
        for path, doc in pattern_manifests(compose_file.parent)
        for d, c in deployment_containers([doc])
        if c["image"].startswith(PROJECT_IMAGES) and c["image"] not in built
    ]


# --- HAProxy (chapter 6's local traffic policies) -------------------------------------------------------


def haproxy_services(compose_file: Path) -> list[str]:
    """Services of a haproxy image: the local runner and compose run them on the configuration they mount."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    return [name for name, s in services.items() if image_name(str(s.get("image", ""))) == "haproxy"]


def haproxy_config(compose_file: Path, name: str) -> list[str]:
    """`haproxy -c` (HAProxy's own check) on the service's configuration, in its compose environment."""
    from mlpatterns.runner.compose import load_services

    service = next(s for s in load_services(compose_file, environ={}) if s.name == name)
    binary, config = service.command[0], service.command[-1]
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    result = subprocess.run(
        [binary, "-c", "-f", config],
        env={"PATH": path, **service.environment},
        capture_output=True,
        text=True,
    )
    return [] if result.returncode == 0 else [f"{rel(Path(config))}: {(result.stdout + result.stderr).strip()}"]
