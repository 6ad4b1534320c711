"""Static validation of every Dockerfile, compose file and Kubernetes manifest, offline (no Docker, no cluster).

Files are found by glob, so a new pattern is checked as soon as it exists. Each rule also has a small test that
feeds it a bad example, to show that it can fail.
"""

from pathlib import Path

import pytest
import yaml

from tests import static_checks as checks

DOCKERFILES = checks.dockerfiles()
COMPOSE_FILES = checks.compose_files()
MANIFEST_FILES = checks.manifest_files()
SERVING_PATTERNS = [
    d
    for d in sorted(checks.ROOT.glob("chapter[4-6]_*/*"))
    if checks.deployment_containers(doc for _, doc in checks.pattern_manifests(d))
]
BUILT_SERVICES = [(f, name) for f in COMPOSE_FILES for name in checks.built_services(f)]
HAPROXY_SERVICES = [(f, name) for f in COMPOSE_FILES for name in checks.haproxy_services(f)]


def files(paths: list[Path]):
    return pytest.mark.parametrize("path", paths, ids=[checks.rel(p) for p in paths])


def assert_ok(errors: list[str]) -> None:
    assert not errors, "\n".join(errors)


def test_the_globs_find_files():
    assert DOCKERFILES and COMPOSE_FILES and MANIFEST_FILES and SERVING_PATTERNS and BUILT_SERVICES


# --- every file in the repository -----------------------------------------------------------------------


@files(DOCKERFILES)
def test_hadolint(path):
    assert_ok(checks.hadolint(path))


@files(COMPOSE_FILES)
def test_compose_spec(path):
    assert_ok(checks.compose_schema(path))


@files(MANIFEST_FILES)
def test_manifest_schema(path):
    """Kubernetes kinds against Kubernetes' schemas (strict), Istio kinds against the vendored Istio CRDs."""
    assert_ok([f"{checks.rel(path)}: {e}" for doc in checks.manifests(path) for e in checks.validate_manifest(doc)])


@files(MANIFEST_FILES)
def test_manifest_rules(path):
    assert_ok([f"{checks.rel(path)}: {e}" for doc in checks.manifests(path) for e in checks.manifest_rules(doc)])


@files(SERVING_PATTERNS)
def test_serving_pattern_has_hpa(path):
    assert_ok(checks.hpa_rules([doc for _, doc in checks.pattern_manifests(path)]))


@pytest.mark.parametrize(
    "compose_file, service", BUILT_SERVICES, ids=[f"{checks.rel(f)}::{name}" for f, name in BUILT_SERVICES]
)
def test_local_compose_image_and_kubernetes_agree(compose_file, service):
    assert_ok(checks.consistency(compose_file, service))


@files(COMPOSE_FILES)
def test_deployed_images_are_built(path):
    assert_ok(checks.unbuilt_images(path))


@pytest.mark.parametrize(
    "compose_file, service", HAPROXY_SERVICES, ids=[f"{checks.rel(f)}::{name}" for f, name in HAPROXY_SERVICES]
)
def test_haproxy_configuration_is_valid(compose_file, service):
    assert_ok(checks.haproxy_config(compose_file, service))


def test_haproxy_check_rejects_a_bad_configuration(tmp_path):
    (tmp_path / "haproxy.cfg").write_text("defaults\n    mode http\n    timeout server tenseconds\n")
    service = {"image": "haproxy:2.6", "volumes": ["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"proxy": service}}))
    assert checks.haproxy_services(tmp_path / "docker-compose.yml") == ["proxy"]
    errors = checks.haproxy_config(tmp_path / "docker-compose.yml", "proxy")
    assert errors and "unexpected character 't' in 'timeout server'" in errors[0]


# --- each rule fails on a bad example -------------------------------------------------------------------

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: iris}
spec:
  hosts: [iris]
  http:
    - route:
        - {destination: {host: iris, subset: svc}, weight: 80}
        - {destination: {host: iris, subset: rf}, weight: 20}
"""
DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: iris}
spec:
  host: iris
  subsets:
    - {name: svc, labels: {model: svc}}
    - {name: rf, labels: {model: rf}}
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: mlpatterns/web:1
          resources: {requests: {cpu: 100m}}
          readinessProbe: {httpGet: {path: /health, port: 8000}}
          livenessProbe: {httpGet: {path: /health, port: 8000}}
"""


@pytest.mark.parametrize("text", [VIRTUAL_SERVICE, DESTINATION_RULE, DEPLOYMENT], ids=["vs", "dr", "deployment"])
def test_valid_examples_pass(text):
    doc = yaml.safe_load(text)
    assert_ok(checks.validate_manifest(doc) + checks.manifest_rules(doc))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("weight: 20", "weigth: 20", "'weigth' was unexpected"),
        ("networking.istio.io/v1", "networking.istio.io/v1beta1", "use networking.istio.io/v1"),
        ("networking.istio.io/v1", "networking.istio.io/v1alpha3", "use networking.istio.io/v1"),
        ("hosts: [iris]", "hosts: iris", "'iris' is not of type 'array'"),
    ],
    ids=["misspelled field", "v1beta1", "v1alpha3", "wrong type"],
)
def test_istio_validator_rejects(old, new, message):
    errors = checks.validate_manifest(yaml.safe_load(VIRTUAL_SERVICE.replace(old, new)))
    assert message in "\n".join(errors)


def test_kubernetes_validator_rejects_unknown_field():
    errors = checks.validate_manifest(yaml.safe_load(DEPLOYMENT.replace("selector:", "replica: 3\n  selector:")))
    assert "'replica' was unexpected" in "\n".join(errors)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("readinessProbe:", "startupProbe:", "has no readinessProbe"),
        ("livenessProbe:", "startupProbe:", "has no livenessProbe"),
        ("resources: {requests: {cpu: 100m}}", "resources: {}", "has no resources.requests"),
    ],
    ids=["readinessProbe", "livenessProbe", "requests"],
)
def test_deployment_rules_reject(old, new, message):
    assert message in "\n".join(checks.manifest_rules(yaml.safe_load(DEPLOYMENT.replace(old, new))))


@pytest.mark.parametrize(
    "kind, api_version", [("HorizontalPodAutoscaler", "autoscaling/v1"), ("CronJob", "batch/v1beta1")]
)
def test_old_api_versions_are_rejected(kind, api_version):
    doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    assert "use apiVersion" in "\n".join(checks.manifest_rules(doc))


def test_deployment_without_hpa_is_rejected():
    hpa = {"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "other"}}}
    assert checks.hpa_rules([yaml.safe_load(DEPLOYMENT), hpa]) == [
        "Deployment web has no HorizontalPodAutoscaler targeting it by name"
    ]


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nCMD python app.py\n")
    assert "DL3007" in "\n".join(checks.hadolint(tmp_path / "Dockerfile"))  # pin the image version


def test_compose_spec_rejects_unknown_key(tmp_path):
    (tmp_path / "docker-compose.yml").write_text("services:\n  web:\n    image: x\n    comand: [serve]\n")
    assert checks.compose_schema(tmp_path / "docker-compose.yml")


def test_drift_between_compose_dockerfile_and_deployment_is_reported(tmp_path):
    (tmp_path / "Dockerfile").write_text(
        'FROM base\nEXPOSE 8000\nHEALTHCHECK CMD ["probe", "http://127.0.0.1:8000/health"]\nCMD ["serve"]\n'
    )
    (tmp_path / "docker-compose.yml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "web": {
                        "image": "mlpatterns/web:1",
                        "build": ".",
                        "command": ["serve", "--debug"],
                        "environment": {"PORT": "8001", "WORKERS": "2"},
                        "ports": ["8000:8000"],
                        "healthcheck": {"test": ["CMD", "probe", "http://127.0.0.1:8000/health"]},
                    }
                }
            }
        )
    )
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "deployment.yml").write_text(DEPLOYMENT.replace("/health, port", "/ready, port"))
    errors = "\n".join(checks.consistency(tmp_path / "docker-compose.yml", "web"))
    for what in [
        "command and CMD",
        "target port and environment PORT",
        "service web: command differ",
        "service web: environment differ",
        "target port and containerPort",
        "healthcheck URL path and readinessProbe path",
    ]:
        assert what in errors
    assert "target port and EXPOSE" not in errors and "HEALTHCHECK" not in errors


def test_a_portless_worker_s_exec_probe_must_run_its_healthcheck(tmp_path):
    (tmp_path / "Dockerfile").write_text('FROM base\nHEALTHCHECK CMD ["check", "heartbeat"]\nCMD ["work"]\n')
    service = {"image": "mlpatterns/worker:1", "build": ".", "command": ["work"]}
    service["healthcheck"] = {"test": ["CMD", "check", "heartbeat"]}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"worker": service}}))
    worker = yaml.safe_load(DEPLOYMENT.replace("mlpatterns/web:1", "mlpatterns/worker:1"))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["work"]
    (tmp_path / "manifests").mkdir()
    for probe, errors in [(["check", "heartbeat"], []), (["check", "other"], ["readinessProbe command differ"])]:
        container["readinessProbe"] = {"exec": {"command": probe}}
        (tmp_path / "manifests" / "deployment.yml").write_text(yaml.safe_dump(worker))
        found = checks.consistency(tmp_path / "docker-compose.yml", "worker")
        assert [e for e in errors if e not in "\n".join(found)] == [] and bool(found) == bool(errors), found
