"""End to end: the proxy and chapter 4's three one-vs-rest backends started by the local runner, as `make up`
starts them, under the original's parameters and under others.

What the pattern promises: each active model's probability becomes a 0/1 decision by its own threshold; a model
switched off is never asked and has no key in the answer; other parameters change the answers with nothing
rebuilt; a missing or wrong parameter stops the proxy at start with a message naming it, never a 500 later.
The reference's outputs are reproduced with this project's models (their probabilities for the reference's
inputs: setosa sample 0.9843 setosa, [6.7, 3.0, 5.2, 2.3] 0.9982 virginica, so the same thresholds decide alike).
Generic bad input is tests/test_bad_input.py's; the OpenAPI contract tests/test_contract.py's.
"""

from pathlib import Path

import pytest
import yaml

from chapter6_operation_management.parameter_based_pattern.proxy import ParameterError, read_parameters
from mlpatterns.runner import RunnerError
from mlpatterns.runner.compose import load_services
from mlpatterns.testing import assert_healthy, assert_refused, metric, start_pattern

PATTERN = Path(__file__).parents[1]
BACKENDS = ["setosa", "versicolor", "virginica"]
# The original's parameters (reference §7): what compose and the ConfigMap set.
REFERENCE = {
    "ACTIVATE_SETOSA": "1",
    "ACTIVATE_VERSICOLOR": "1",
    "ACTIVATE_VIRGINICA": "0",
    "THRESHOLD_SETOSA": "0.9",
    "THRESHOLD_VERSICOLOR": "0.85",
    "THRESHOLD_VIRGINICA": "0.95",
    "DEFAULT_THRESHOLD": "0.95",
}
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
FAR = [50.0, 30.1, 111.4, 110.2]  # no flower: every model unsure
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
ASKED = ('http_requests_total{method="POST",path="/predict"', 'http_requests_total{method="GET",path="/predict/test"')


@pytest.fixture(scope="module")
def started():
    """The pattern with the reference's parameters, whatever the shell's ACTIVATE_*/THRESHOLD_* say."""
    with start_pattern(PATTERN, overrides={"proxy": REFERENCE}) as run:
        yield run


@pytest.fixture(scope="module")
def proxy(started):
    return started.client("proxy")


def decisions(proxy, rows: list) -> dict | list:
    response = proxy.post("/predict", json={"data": rows})
    assert response.status_code == 200, response.text
    return response.json()


def asked(started, name: str) -> float:
    """How many predictions the backend has made (POST /predict and GET /predict/test)."""
    return sum(metric(started.client(name), prefix) for prefix in ASKED)


def test_the_reference_decisions(proxy):
    assert decisions(proxy, [SETOSA]) == {"setosa": 1, "versicolor": 0}
    assert decisions(proxy, [FAR]) == {"setosa": 0, "versicolor": 0}
    assert decisions(proxy, [VIRGINICA]) == {"setosa": 0, "versicolor": 0}  # virginica is off: no key
    assert decisions(proxy, [VERSICOLOR]) == {"setosa": 0, "versicolor": 1}
    for path in ("/predict/get/test", "/predict/post/test"):  # the sample, SETOSA
        assert proxy.get(path).json() == {"setosa": 1, "versicolor": 0}, path


def test_every_row_of_a_batch_is_decided(proxy):
    rows = [SETOSA, VIRGINICA, FAR, VERSICOLOR]
    assert decisions(proxy, rows) == [decisions(proxy, [row]) for row in rows]


def test_a_decision_is_the_models_probability_against_its_threshold(started, proxy):
    rows = [SETOSA, VIRGINICA, FAR, VERSICOLOR, [1.0, 2.0, 3.0, 4.0], [5.0, 3.0, 1.6, 0.2], [6.0, 2.7, 5.1, 1.6]]
    answers = decisions(proxy, rows)
    for name in ("setosa", "versicolor"):
        threshold = float(REFERENCE[f"THRESHOLD_{name.upper()}"])
        scores = started.client(name).post("/predict", json={"data": rows}).json()["prediction"]
        assert [answer[name] for answer in answers] == [int(p_is >= threshold) for _, p_is in scores], name


def test_a_model_switched_off_is_never_asked(started, proxy):
    before = {name: asked(started, name) for name in BACKENDS}
    response = proxy.post("/predict", json={"data": [SETOSA, VIRGINICA]})
    proxy.get("/predict/get/test")
    proxy.get("/predict/post/test")
    after = {name: asked(started, name) for name in BACKENDS}
    assert after["virginica"] == before["virginica"]
    assert after["setosa"] == before["setosa"] + 3 and after["versicolor"] == before["versicolor"] + 3
    assert [entry.split(";")[0] for entry in response.headers["server-timing"].split(", ")] == ["setosa", "versicolor"]
    # It is still watched: /health/all checks every backend, so it can be seen ready before it is switched on.
    assert {name: part["status"] for name, part in proxy.get("/health/all").json().items()} == dict.fromkeys(
        BACKENDS, 200
    )


def test_metadata_names_each_backends_parameters(started, proxy):
    metadata = proxy.get("/metadata").json()
    assert metadata["backends"] == {
        "setosa": {"url": started.url("setosa"), "active": True, "threshold": 0.9},
        "versicolor": {"url": started.url("versicolor"), "active": True, "threshold": 0.85},
        "virginica": {"url": started.url("virginica"), "active": False, "threshold": 0.95},
    }
    assert metadata["default_threshold"] == 0.95
    assert "parameters: setosa on (threshold 0.9), versicolor on (threshold 0.85), virginica off (threshold 0.95)" in (
        started.logs("proxy")
    )


def test_decisions_are_counted(proxy):
    counter = 'parameter_decisions_total{backend="setosa",decision="1"}'
    before = metric(proxy, counter)
    decisions(proxy, [SETOSA, SETOSA, FAR])
    assert metric(proxy, counter) == before + 2


def test_bad_input_is_refused_by_the_proxy_or_passed_on(proxy):
    assert_refused(proxy.post("/predict", json={"data": []}), 422, "at least 1 item")
    assert_refused(proxy.post("/predict", json={"data": [SETOSA[:3]]}), 422, "each row must have shape 4")
    assert_refused(proxy.post("/predict", json={"data": [SETOSA] * 10_001}), 413, "at most 10000 rows; got 10001")
    assert_healthy(proxy)


def test_other_parameters_change_the_answers():
    """The reference's two changes at once: virginica switched on, setosa's threshold raised above its 0.9843."""
    with start_pattern(
        PATTERN, overrides={"proxy": {**REFERENCE, "ACTIVATE_VIRGINICA": "1", "THRESHOLD_SETOSA": "0.99"}}
    ) as run:
        proxy = run.client("proxy")
        assert decisions(proxy, [VIRGINICA]) == {"setosa": 0, "versicolor": 0, "virginica": 1}
        assert decisions(proxy, [SETOSA]) == {"setosa": 0, "versicolor": 0, "virginica": 0}
        assert decisions(proxy, [FAR]) == {"setosa": 0, "versicolor": 0, "virginica": 0}
        assert proxy.get("/metadata").json()["backends"]["setosa"]["threshold"] == 0.99


def test_a_missing_or_wrong_parameter_stops_the_proxy_at_start():
    wrong = {**REFERENCE, "ACTIVATE_VIRGINICA": "", "THRESHOLD_SETOSA": "1.5"}  # empty: not set
    with pytest.raises(RunnerError) as failure:
        with start_pattern(PATTERN, overrides={"proxy": wrong}):
            pass
    message = str(failure.value)
    assert message.startswith("proxy exited with code"), message
    assert (
        "THRESHOLD_SETOSA must be a number from 0 to 1; got '1.5'; ACTIVATE_VIRGINICA is not set: every backend "
        "needs its switch, 1 to ask it or 0 to leave it out (the backends: setosa, versicolor, virginica)"
    ) in message


def test_a_failed_backend_is_unknown_not_no():
    overrides = {
        "proxy": {**REFERENCE, "BACKEND_TIMEOUT_SECONDS": "0.5"},
        "versicolor": {"RESPONSE_DELAY_SECONDS": "5"},
    }
    with start_pattern(PATTERN, overrides=overrides) as run:
        proxy = run.client("proxy")
        assert decisions(proxy, [SETOSA, FAR]) == [{"setosa": 1, "versicolor": None}, {"setosa": 0, "versicolor": None}]
        assert metric(proxy, 'parameter_decisions_total{backend="versicolor",decision="unknown"}') == 2
        assert "backend 'versicolor' failed: upstream 'versicolor' did not answer within 0.5 s" in run.logs("proxy")


# -- the parameters themselves ------------------------------------------------------------------------------


def test_compose_and_kubernetes_carry_the_reference_parameters():
    proxy = next(s for s in load_services(PATTERN / "docker-compose.yml", environ={}) if s.name == "proxy")
    assert {key: proxy.environment[key] for key in REFERENCE} == REFERENCE  # the defaults of ${VAR:-default}
    documents = list(yaml.safe_load_all((PATTERN / "manifests" / "configmap.yml").read_text()))
    assert next(d for d in documents if d["metadata"]["name"] == "parameters")["data"] == REFERENCE
    deployments = yaml.safe_load_all((PATTERN / "manifests" / "deployment.yml").read_text())
    container = next(d for d in deployments if d["metadata"]["name"] == "proxy")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("valueFrom", {}).get("configMapKeyRef") for e in container["containers"][0]["env"]}
    assert {key: env[key] for key in REFERENCE} == {
        key: {"name": "parameters", "key": key, "optional": True} for key in REFERENCE
    }


BACKEND_URLS = {f"SERVICE_{name.upper()}": f"http://{name}:8000" for name in BACKENDS}


def parameters(**environ: str) -> dict:
    found = read_parameters({**BACKEND_URLS, **environ}, {name: f"http://{name}:8000" for name in BACKENDS}, 0.95)
    return {name: (p.active, p.threshold) for name, p in found.items()}


def test_a_backend_without_a_threshold_takes_the_default():
    switches = {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "true", "ACTIVATE_VIRGINICA": "0"}
    assert parameters(**switches, THRESHOLD_SETOSA="0.5", THRESHOLD_VERSICOLOR="") == {
        "setosa": (True, 0.5),
        "versicolor": (True, 0.95),  # empty: not set
        "virginica": (False, 0.95),
    }


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1"}, "ACTIVATE_VIRGINICA is not set"),
        (
            {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1", "ACTIVATE_VIRGINICA": "2"},
            "ACTIVATE_VIRGINICA must be 1 (ask virginica) or 0 (leave it out); got '2'",
        ),
        (
            {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1", "ACTIVATE_VIRGINICA": "0", "THRESHOLD_SETOSA": "high"},
            "THRESHOLD_SETOSA must be a number from 0 to 1; got 'high'",
        ),
        (
            {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1", "ACTIVATE_VIRGINICA": "0", "THRESHOLD_SETOSA": "nan"},
            "THRESHOLD_SETOSA must be a number from 0 to 1; got 'nan'",
        ),
        (
            {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1", "ACTIVATE_VIRGINICA": "0", "THRESHOLD_SETOSA": "-0.1"},
            "THRESHOLD_SETOSA must be a number from 0 to 1; got '-0.1'",
        ),
        (
            {"ACTIVATE_SETOSA": "1", "ACTIVATE_VERSICOLOR": "1", "ACTIVATE_VIRGINICA": "0", "ACTIVATE_VIRGINCA": "1"},
            "ACTIVATE_VIRGINCA names no backend (there is no SERVICE_VIRGINCA)",
        ),
        (
            {"ACTIVATE_SETOSA": "0", "ACTIVATE_VERSICOLOR": "0", "ACTIVATE_VIRGINICA": "0"},
            "every backend is switched off (ACTIVATE_SETOSA=0, ACTIVATE_VERSICOLOR=0, ACTIVATE_VIRGINICA=0)",
        ),
    ],
    ids=[
        "missing switch",
        "switch not 1 or 0",
        "threshold not a number",
        "threshold NaN",
        "threshold below 0",
        "misspelt name",
        "all off",
    ],
)
def test_a_wrong_parameter_is_named(environ, message):
    with pytest.raises(ParameterError) as failure:
        parameters(**environ)
    assert message in str(failure.value)
