"""The split is one policy in three places: haproxy.cfg (local run and compose), the proxy's compose environment,
and manifests/istio.yml (Kubernetes). Every number and name of the proxy's configuration is tied here to the Istio
object that carries it, so that changing one without the other fails. Static: nothing is started."""

from pathlib import Path

import pytest
import yaml

from mlpatterns.haproxy_config import HAProxyConfig, to_seconds
from mlpatterns.runner.compose import load_services

PATTERN = Path(__file__).parents[1]
ARMS = ("svc", "rf")  # HAProxy's server names = the DestinationRule's subsets = the Deployments' version labels
# HAProxy timeouts of the caller's side, which no Istio object of the pattern sets (the sidecar's own defaults).
CLIENT_SIDE_TIMEOUTS = {"client", "http-keep-alive"}


@pytest.fixture(scope="module")
def config() -> HAProxyConfig:
    return HAProxyConfig.read(PATTERN / "haproxy.cfg")


@pytest.fixture(scope="module")
def services():
    return {service.name: service for service in load_services(PATTERN / "docker-compose.yml", environ={})}


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    docs = [
        doc for path in sorted((PATTERN / "manifests").glob("*.yml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs if doc}


def routes(manifests) -> dict[str, dict]:
    return {route["name"]: route for route in manifests["VirtualService", "iris"]["spec"]["http"]}


def test_the_split_has_the_virtual_service_s_weights(config, services, manifests):
    """Draws are in [0, 100); those below SVC_PERCENT go to svc, the rest to rf: Istio's weights (which sum to 100)."""
    percent = int(services["proxy"].environment["SVC_PERCENT"])
    weights = {route["destination"]["subset"]: route["weight"] for route in routes(manifests)["split"]["route"]}
    assert weights == {"svc": percent, "rf": 100 - percent} == {"svc": 60, "rf": 40}
    draws = config.directives("models", "http-request", "set-var(txn.draw)")
    assert draws == [
        ["rand(100)"],
        ["req.hdr(X-User-ID),xxh32,mod(100)", "if", "{", "req.hdr(X-User-ID)", "-m", "len", "1:", "}"],
    ]
    rules = config.directives("models", "use-server")
    assert ["svc", "if", "{", "var(txn.draw)", "-m", "int", "lt", "${SVC_PERCENT}", "}"] in rules
    assert rules[-1] == ["rf", "if", "TRUE"]  # the rest


def test_an_arm_asked_for_by_header_is_the_virtual_service_s_header_route(config, manifests):
    rules = config.directives("models", "use-server")
    for arm in ARMS:
        route = routes(manifests)[f"arm-{arm}"]
        [match] = route["match"]
        assert match == {"headers": {"x-ab-arm": {"exact": arm}}}
        assert [r["destination"]["subset"] for r in route["route"]] == [arm]
        # HAProxy's header names are case-insensitive, as HTTP's; the header routes come before the split's.
        rule = [arm, "if", "{", "req.hdr(X-AB-Arm)", "-m", "str", arm, "}"]
        assert rule in rules and rules.index(rule) < len(rules) - 2
    assert list(routes(manifests)) == ["arm-svc", "arm-rf", "split"]


def test_timeouts_and_retries_are_the_istio_objects(config, manifests):
    rule = manifests["DestinationRule", "iris"]["spec"]
    connect = rule["trafficPolicy"]["connectionPool"]["tcp"]["connectTimeout"]
    assert config.seconds("defaults", "timeout", "connect") == to_seconds(connect)
    for route in routes(manifests).values():
        assert config.seconds("defaults", "timeout", "server") == to_seconds(route["timeout"])
        assert int(config.value("defaults", "retries")) == route["retries"]["attempts"]
        assert route["retries"]["retryOn"] == "connect-failure"  # what HAProxy's `retries` covers by default
    assert not config.directives("defaults", "retry-on")
    timeouts = {words[0] for words in config.directives("defaults", "timeout")}
    assert timeouts - CLIENT_SIDE_TIMEOUTS == {"connect", "server"}  # a new one must be tied here too
    assert all(not config.directives(section, "timeout") for section in config.sections if section != "defaults")


def test_each_server_is_the_subset_of_its_model(config, services, manifests):
    """Server `svc` reaches compose's iris-svc, whose model is the one the svc subset's Deployment serves."""
    servers = config.servers("models")
    assert list(servers) == list(ARMS)
    subsets = {subset["name"]: subset["labels"] for subset in manifests["DestinationRule", "iris"]["spec"]["subsets"]}
    assert list(subsets) == list(ARMS)
    models = manifests["ConfigMap", "iris-models"]["data"]
    for arm in ARMS:
        variable = servers[arm][0].strip("${}")
        service = services["proxy"].environment[variable].split(":")[0]
        assert service == f"iris-{arm}"
        assert services[service].environment["MODEL_PATH"] == models[arm]
        template = manifests["Deployment", f"iris-{arm}"]["spec"]["template"]["metadata"]["labels"]
        assert subsets[arm].items() <= template.items()


def test_each_autoscaler_sees_only_its_own_model_s_pods(manifests):
    """The original's Deployments both selected app=iris, so each HPA averaged the CPU of both models' pods."""
    deployments = [doc for (kind, _), doc in manifests.items() if kind == "Deployment"]
    for (kind, name), hpa in manifests.items():
        if kind != "HorizontalPodAutoscaler":
            continue
        target = manifests["Deployment", hpa["spec"]["scaleTargetRef"]["name"]]
        selector = target["spec"]["selector"]["matchLabels"].items()
        selected = [
            d["metadata"]["name"]
            for d in deployments
            if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [target["metadata"]["name"]], f"HPA {name} averages over {selected}"
    service = manifests["Service", "iris"]["spec"]["selector"]
    assert all(service.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments)
