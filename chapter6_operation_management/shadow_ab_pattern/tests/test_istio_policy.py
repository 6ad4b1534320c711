"""The local proxy carries the Istio objects' numbers, and the manifests fix the original's overlapping selectors.

Istio mirrors in the cluster (manifests/istio.yml); proxy.py stands in for it locally and in compose. Each number
of the policy is read from the VirtualService or DestinationRule and compared with the proxy's compose
environment and its settings' defaults (the numbers of a run without compose). The validity of the objects
against Istio's CRD schemas is tests/test_static.py's.
"""

import re
from pathlib import Path

import pytest
import yaml

from chapter6_operation_management.shadow_ab_pattern.proxy import ProxySettings

PATTERN = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())
PROXY_ENV = COMPOSE["services"]["proxy"]["environment"]
MANIFESTS = [
    doc for path in sorted((PATTERN / "manifests").glob("*.yml")) for doc in yaml.safe_load_all(path.read_text())
]
DEFAULTS = {name: field.default for name, field in ProxySettings.model_fields.items()}


def the(kind: str, name: str | None = None) -> dict:
    (doc,) = [d for d in MANIFESTS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def all_of(kind: str) -> list[dict]:
    return [d for d in MANIFESTS if d["kind"] == kind]


def seconds(duration: str) -> float:
    """An Istio (protobuf) duration: "2s", "1.5s", "500ms", "1m"."""
    number, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", duration).groups()
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


ROUTE = the("VirtualService", "iris")["spec"]["http"][0]
RF_POOL = next(s for s in the("DestinationRule", "iris")["spec"]["subsets"] if s["name"] == "rf")["trafficPolicy"][
    "connectionPool"
]


@pytest.mark.parametrize(
    "setting, istio_value",
    [
        ("mirror_percent", ROUTE["mirrorPercentage"]["value"]),
        # Envoy gives a mirrored request the route's timeout: one number for A's answer and B's copy.
        ("primary_timeout_seconds", seconds(ROUTE["timeout"])),
        ("mirror_timeout_seconds", seconds(ROUTE["timeout"])),
        # Copies in flight to B: the rf subset's connections and requests (per sidecar; per proxy worker here).
        ("mirror_max_in_flight", RF_POOL["tcp"]["maxConnections"]),
        ("mirror_max_in_flight", RF_POOL["http"]["http2MaxRequests"]),
    ],
)
def test_each_number_of_the_proxy_is_the_istio_objects(setting, istio_value):
    assert float(PROXY_ENV[setting.upper()]) == istio_value, f"docker-compose.yml {setting.upper()}"
    assert DEFAULTS[setting] == istio_value, f"ProxySettings.{setting}'s default"


def test_the_istio_pending_queue_is_its_smallest():
    assert RF_POOL["http"]["http1MaxPendingRequests"] == 1  # 0 means no limit in Istio; the proxy queues none


def test_all_traffic_goes_to_a_and_is_mirrored_to_b_as_the_proxy_does():
    assert ROUTE["route"] == [{"destination": {"host": "iris", "subset": "svc"}, "weight": 100}]
    assert ROUTE["mirror"] == {"host": "iris", "subset": "rf"}
    # The proxy's primary is the compose service of A's model, its shadow B's, as the subsets pick them.
    subsets = {s["name"]: s["labels"] for s in the("DestinationRule", "iris")["spec"]["subsets"]}
    for subset, url in [("svc", PROXY_ENV["PRIMARY_URL"]), ("rf", PROXY_ENV["SHADOW_URL"])]:
        deployment = selected_deployment(subsets[subset])
        service = re.fullmatch(r"http://([\w-]+):8000", url)[1]
        assert service == deployment["metadata"]["name"]
        model = the("ConfigMap", "iris-models")["data"][model_key(deployment)]
        assert COMPOSE["services"][service]["environment"]["MODEL_PATH"] == model


def selected_deployment(labels: dict) -> dict:
    """The one Deployment whose pods have these labels."""
    (deployment,) = [d for d in all_of("Deployment") if labels.items() <= pod_labels(d).items()]
    return deployment


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def model_key(deployment: dict) -> str:
    (env,) = [e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MODEL_PATH"]
    return env["valueFrom"]["configMapKeyRef"]["key"]


def test_each_deployment_and_its_hpa_own_only_their_pods():
    """The original's Deployments both selected app=iris, so each HPA averaged CPU over both models' pods."""
    deployments = all_of("Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == ["iris-rf", "iris-svc"]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert "version" in selector
        owned = [d["metadata"]["name"] for d in deployments if selector.items() <= pod_labels(d).items()]
        assert owned == [deployment["metadata"]["name"]]
    targets = sorted(h["spec"]["scaleTargetRef"]["name"] for h in all_of("HorizontalPodAutoscaler"))
    assert targets == ["iris-rf", "iris-svc"]


def test_the_service_reaches_both_models_and_the_subsets_one_each():
    selector = the("Service", "iris")["spec"]["selector"]
    assert all(selector.items() <= pod_labels(d).items() for d in all_of("Deployment"))
    subsets = {
        s["name"]: selected_deployment(s["labels"])["metadata"]["name"]
        for s in all_of("DestinationRule")[0]["spec"]["subsets"]
    }
    assert subsets == {"svc": "iris-svc", "rf": "iris-rf"}
