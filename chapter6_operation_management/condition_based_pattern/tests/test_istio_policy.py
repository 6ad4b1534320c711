"""The same policy in both places: haproxy.cfg (local and compose) carries the VirtualService's numbers and values.

The header and its value, the route each way goes, the 10 s timeout, the models behind each route and the client
Job's targets are read from the files themselves and compared; a change to one that is not made to the other fails
here. (Istio's own schemas check the objects: tests/test_static.py.)"""

from pathlib import Path

import pytest
import yaml

from chapter6_operation_management.condition_based_pattern import client
from mlpatterns.haproxy_config import HAProxyConfig, to_seconds

PATTERN = Path(__file__).parents[1]
CONFIG = HAProxyConfig.read(PATTERN / "haproxy.cfg")
COMPOSE = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())["services"]


def manifests(name: str) -> dict[tuple[str, str], dict]:
    """(kind, name) -> the object, of one manifest file."""
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all((PATTERN / name).read_text())}


ISTIO = manifests("manifests/istio.yml")
VIRTUAL_SERVICE = ISTIO["VirtualService", "proxy"]["spec"]
DESTINATION_RULE = ISTIO["DestinationRule", "proxy"]["spec"]
CONDITION, DEFAULT = VIRTUAL_SERVICE["http"]


def subset(route: dict) -> str:
    [destination] = route["route"]
    return destination["destination"]["subset"]


def the_condition() -> tuple[str, str]:
    """(header, value) of the VirtualService's one match: `headers: {target: {exact: speech}}`."""
    [match] = CONDITION["match"]
    [(header, rule)] = match["headers"].items()
    assert list(rule) == ["exact"], rule
    return header, rule["exact"]


def test_the_header_and_its_value_are_the_ones_the_virtual_service_matches():
    header, value = the_condition()
    acls = {words[0]: words[1:] for words in CONFIG.directives("router", "acl")}
    assert acls["speech_request"] == [f"req.fhdr({header})", "-m", "str", value]
    assert acls["one_target"] == [f"req.fhdr_cnt({header})", "eq", "1"]


def test_the_matched_requests_go_to_the_matched_subset_and_the_rest_to_the_default_one():
    assert "match" not in DEFAULT  # the last route takes every request the first did not match
    assert CONFIG.directives("router", "use_backend") == [[subset(CONDITION), "if", "one_target", "speech_request"]]
    assert CONFIG.value("router", "default_backend") == subset(DEFAULT)


def test_each_route_gives_up_after_the_virtual_services_timeout():
    assert {to_seconds(route["timeout"]) for route in (CONDITION, DEFAULT)} == {10.0}
    assert CONFIG.seconds("defaults", "timeout", "server") == 10.0
    for backend in ("digits", "words"):  # no backend overrides the default
        assert not CONFIG.directives(backend, "timeout")


@pytest.mark.parametrize("name", ["digits", "words"])
def test_each_subset_is_served_by_the_same_model_in_compose_and_in_kubernetes(name):
    """haproxy.cfg's backend `name` -> compose service `name`; the subset `name` -> Deployment `name`'s pods; both
    run the same image with the same model, labels and name."""
    [(_server, options)] = CONFIG.servers(name).items()
    address_variable = options[0].strip("${}")
    assert COMPOSE["proxy"]["environment"][address_variable] == f"{name}:8000"
    assert [s["labels"] for s in DESTINATION_RULE["subsets"] if s["name"] == name] == [{"version": name}]

    deployment = manifests("manifests/deployment.yml")["Deployment", name]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == {"app": "model", "version": name}
    service = manifests("manifests/service.yml")["Service", DESTINATION_RULE["host"]]
    assert service["spec"]["selector"] == {"app": "model"}  # both subsets behind the one host

    config_map = manifests("manifests/configmap.yml")["ConfigMap", f"{name}-model"]["data"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    from_config_map = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {key: ref["name"] for key, ref in from_config_map.items()} == dict.fromkeys(config_map, f"{name}-model")
    environment = COMPOSE[name]["environment"]
    assert {key: environment[key] for key in config_map} == config_map
    assert config_map["MODEL_NAME"] == name  # every answer's `model` names its subset


def test_no_two_deployments_select_each_others_pods():
    """The original's Deployments both selected app=proxy: each HPA averaged over both. Here none overlaps."""
    deployments = [d for (kind, _), d in manifests("manifests/deployment.yml").items() if kind == "Deployment"]
    for one in deployments:
        for other in deployments:
            selector = one["spec"]["selector"]["matchLabels"].items()
            pods = other["spec"]["template"]["metadata"]["labels"].items()
            assert (selector <= pods) == (one is other), (one["metadata"]["name"], other["metadata"]["name"])
    hpas = manifests("manifests/hpa.yml")
    assert {d["spec"]["scaleTargetRef"]["name"] for d in hpas.values()} == {d["metadata"]["name"] for d in deployments}


def test_the_client_job_sends_exactly_the_matched_value_and_expects_each_routes_model():
    header, value = the_condition()
    job = manifests("manifests/client.yml")["Job", "client"]
    routes = {}
    for container in job["spec"]["template"]["spec"]["containers"]:
        args = container["args"]
        options = dict(zip(args[::2], args[1::2], strict=True))
        assert options["--url"] == f"http://{DESTINATION_RULE['host']}.condition-based-serving.svc.cluster.local:8000"
        routes[options.get("--target")] = options["--expect"]
    assert header == client.HEADER  # the one header the client sets
    assert routes == {value: subset(CONDITION), None: subset(DEFAULT)}
