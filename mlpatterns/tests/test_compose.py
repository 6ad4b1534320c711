"""The strict compose reader of the local runner: accepted keys, compose's interpolation, commands, environment."""

from pathlib import Path

import pytest
import yaml

from mlpatterns.runner import RunnerError, run_pattern
from mlpatterns.runner.compose import ComposeError, interpolate, load_services, parse_environment
from mlpatterns.runner.run import REPO_ROOT


def write(directory: Path, services: dict, **top) -> Path:
    path = directory / "docker-compose.yml"
    path.write_text(yaml.safe_dump({"services": services, **top}))
    return path


def load_one(directory: Path, service: dict, environ: dict | None = None):
    (loaded,) = load_services(write(directory, {"app": service}), environ={} if environ is None else environ)
    return loaded


APP = {"build": ".", "command": ["python", "-m", "app"]}


# --- accepted keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compose_file",
    [
        *sorted(REPO_ROOT.glob("chapter*/*/docker-compose.yml")),
        *sorted(REPO_ROOT.glob("mlpatterns/bench/**/docker-compose.yml")),
    ],
    ids=lambda path: str(path.relative_to(REPO_ROOT)),
)
def test_every_compose_file_of_the_repository_is_accepted(compose_file):
    assert load_services(compose_file)


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ({**APP, "entrypont": ["tini"]}, "'entrypont'"),
        ({**APP, "deploy": {"replcas": 2}}, "'deploy.replcas'"),
        ({**APP, "healthcheck": {"test": ["CMD", "true"], "intervall": "5s"}}, "'healthcheck.intervall'"),
        ({**APP, "depends_on": {"db": {"condtion": "service_healthy"}}}, "'depends_on.db.condtion'"),
        ({**APP, "x-locl": {"environment": {"A": "1"}}}, "'x-locl'"),
        ({**APP, "x-local": {"environmnt": {"A": "1"}}}, "'x-local.environmnt'"),
        ({**APP, "ports": [{"target": 80, "publshed": 8080}]}, "'ports\\[\\].publshed'"),
        ({**APP, "working_dir": "/app"}, "'working_dir'"),
    ],
)
def test_an_unknown_key_stops_with_the_file_the_service_and_its_name(tmp_path, service, key):
    with pytest.raises(ComposeError, match=rf"docker-compose.yml: service 'app': unsupported key {key} \(the local"):
        load_one(tmp_path, service)


def test_an_unknown_top_level_key_stops_but_extensions_pass(tmp_path):
    assert load_services(write(tmp_path, {"app": APP}, **{"x-common": {"a": 1}}))
    with pytest.raises(ComposeError, match=r"docker-compose.yml: unsupported key 'configs' \(.*name, services"):
        load_services(write(tmp_path, {"app": APP}, configs={}))


def test_the_runner_stops_on_an_unknown_key_before_starting_anything(tmp_path):
    write(tmp_path, {"app": {**APP, "entrypont": "tini"}})
    with pytest.raises(RunnerError, match=r"service 'app': unsupported key 'entrypont' \(the local runner accepts: "):
        with run_pattern(tmp_path):
            pass


def test_docker_only_keys_are_accepted(tmp_path):
    service = {
        **APP,
        "image": "mlpatterns/app:0.1.0",
        "pull_policy": "never",
        "restart": "unless-stopped",
        "volumes": ["models:/models"],
        "networks": ["default"],
        "container_name": "app",
        "labels": {"a": "b"},
        "deploy": {"resources": {"limits": {"cpus": "1"}}, "restart_policy": {"condition": "on-failure"}},
        "healthcheck": {"test": ["CMD", "true"], "interval": "5s", "timeout": "1s", "retries": 3},
    }
    assert load_one(tmp_path, service).healthcheck == ["true"]


def test_a_command_on_a_backing_image_is_refused(tmp_path):
    with pytest.raises(ComposeError, match=r"service 'app': 'command' of a redis image is not supported"):
        load_one(tmp_path, {"image": "redis:7", "command": "redis-server --maxmemory 10mb"})


def test_bad_dependency_conditions_are_refused_and_optional_ones_dropped(tmp_path):
    with pytest.raises(ComposeError, match=r"depends_on.db.condition 'service_ready' is none of"):
        load_one(tmp_path, {**APP, "depends_on": {"db": {"condition": "service_ready"}}})
    assert load_one(tmp_path, {**APP, "depends_on": {"db": {"required": False}}}).depends_on == {}


# --- interpolation ----------------------------------------------------------------------------------------

VARIABLES = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET/${SET}", "value/value"),
        ("$UNSET|${UNSET}|${EMPTY}", "||"),
        ("${UNSET:-default} ${EMPTY:-default} ${SET:-default}", "default default value"),
        ("${UNSET-default} ${EMPTY-default} ${SET-default}", "default  value"),
        ("${UNSET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|${SET:+alt}", "||alt|alt"),
        ("${UNSET:-${SET}-x}", "value-x"),  # a default is interpolated too
        ("${SET:-${MISSING:?never evaluated}}", "value"),
        ("$$SET costs $$5 and $${SET}", "$SET costs $5 and ${SET}"),
        ("${SET}suffix $SET.txt {run_dir}/models", "valuesuffix value.txt {run_dir}/models"),
        ("no variables", "no variables"),
    ],
)
def test_interpolation_as_compose_does_it(text, expected):
    assert interpolate(text, VARIABLES) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("${UNSET:?set UNSET to the model path}", "required variable UNSET is missing a value: set UNSET to the"),
        ("${EMPTY:?must not be empty}", "required variable EMPTY is missing a value: must not be empty"),
        ("${UNSET?must be set}", "required variable UNSET is missing a value: must be set"),
        ("costs $5", r"invalid interpolation in 'costs \$5' \(write \$\$ for a literal \$\)"),
        ("${SET", r"unclosed \$\{"),
        ("${1X}", "invalid variable name"),
        ("${SET:=x}", "invalid interpolation"),
    ],
)
def test_interpolation_errors(text, error):
    with pytest.raises(ValueError, match=error):
        interpolate(text, VARIABLES)
    assert interpolate("${EMPTY?set but empty is fine}", VARIABLES) == ""


def test_a_required_variable_stops_the_load_naming_where(tmp_path):
    service = {**APP, "environment": {"MODEL_PATH": "${MODEL_PATH:?give the model}"}}
    with pytest.raises(ComposeError, match=r"service 'app': environment.MODEL_PATH: required variable MODEL_PATH"):
        load_one(tmp_path, service)


def test_values_come_from_the_environment_over_the_dot_env_file(tmp_path):
    (tmp_path / ".env").write_text("# defaults of this pattern\nTAG=from-dotenv\nWORKERS=3\n\nexport PORT='8001'\n")
    service = {
        "build": ".",
        "command": "serve --workers ${WORKERS} --tag $TAG",
        "environment": {"PORT": "${PORT}", "TAG": "${TAG}"},
        "ports": ["${PORT}:${PORT}"],
        "deploy": {"replicas": "${REPLICAS:-1}"},
    }
    loaded = load_one(tmp_path, service, environ={"TAG": "from-env"})
    assert loaded.command == ["serve", "--workers", "3", "--tag", "from-env"]
    assert loaded.environment == {"PORT": "8001", "TAG": "from-env"}
    assert (loaded.ports, loaded.replicas) == ([(8001, 8001)], 1)


# --- commands and environment -----------------------------------------------------------------------------


def test_a_string_command_is_split_like_a_shell(tmp_path):
    service = {"build": ".", "command": """python -c 'print("a b")' --name "two words" plain"""}
    assert load_one(tmp_path, service).command == ["python", "-c", 'print("a b")', "--name", "two words", "plain"]


@pytest.mark.parametrize(
    ("entrypoint", "command", "expected"),
    [
        ("tini --", "python -m app", ["tini", "--", "python", "-m", "app"]),
        (["python", "-m"], ["app", "--port=8000"], ["python", "-m", "app", "--port=8000"]),
        (["python", "-m", "app"], None, ["python", "-m", "app"]),
    ],
)
def test_the_entrypoint_comes_before_the_command(tmp_path, entrypoint, command, expected):
    service = {"build": ".", "entrypoint": entrypoint} | ({"command": command} if command else {})
    assert load_one(tmp_path, service).command == expected


def test_an_x_local_command_stands_in_for_a_third_party_image(tmp_path):
    shipper = {
        "image": "fluent/fluent-bit:3.2.10",
        "entrypoint": ["/fluent-bit/bin/fluent-bit"],
        "command": ["-c", "/fluent-bit/etc/fluent-bit.conf"],
        "x-local": {"command": "python -m shipper 'a b.conf'"},
    }
    assert load_one(tmp_path, shipper).command == ["python", "-m", "shipper", "a b.conf"]


def test_environment_list_and_mapping_with_bare_keys(tmp_path):
    environ = {"FROM_SHELL": "shell", "NULL_SET": "also shell"}
    listed = {**APP, "environment": ["A=1", "B=x=y", "FROM_SHELL", "NOT_SET", "EMPTY="]}
    assert load_one(tmp_path, listed, environ).environment == {"A": "1", "B": "x=y", "FROM_SHELL": "shell", "EMPTY": ""}
    mapped = {**APP, "environment": {"NULL_SET": None, "NULL_UNSET": None, "N": 2, "FLAG": True}}
    assert load_one(tmp_path, mapped, environ).environment == {"NULL_SET": "also shell", "N": "2", "FLAG": "true"}
    # The static checks read the literal values: a bare key is "" there.
    assert parse_environment(["A=1", "BARE"]) == {"A": "1", "BARE": ""}


def test_env_files_relative_to_the_compose_file_with_environment_winning(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "common.env").write_text(
        '# shared\nA=from-file\nB="quoted # not a comment"\nC=plain # a comment\n\nD=\nFROM_SHELL\n'
    )
    (tmp_path / "local.env").write_text("A=second-file\nE='single'\n")
    service = {
        **APP,
        "env_file": ["config/common.env", "local.env", {"path": "missing.env", "required": False}],
        "environment": {"C": "from-environment"},
    }
    assert load_one(tmp_path, service, {"FROM_SHELL": "shell"}).environment == {
        "A": "second-file",
        "B": "quoted # not a comment",
        "C": "from-environment",
        "D": "",
        "FROM_SHELL": "shell",
        "E": "single",
    }
    assert load_one(tmp_path, {**APP, "env_file": "local.env"}).environment == {"A": "second-file", "E": "single"}
    with pytest.raises(ComposeError, match=r"service 'app': env_file .*missing.env does not exist"):
        load_one(tmp_path, {**APP, "env_file": "missing.env"})
    (tmp_path / "bad.env").write_text("A=1\nnot a line\n")
    with pytest.raises(ComposeError, match=r"bad.env:2: expected KEY=VALUE, found 'not a line'"):
        load_one(tmp_path, {**APP, "env_file": "bad.env"})


# --- replicas -----------------------------------------------------------------------------------------------


def test_replicas_are_read_and_refused_where_they_would_clash(tmp_path):
    assert load_one(tmp_path, {**APP, "deploy": {"replicas": 3}}).replicas == 3
    assert load_one(tmp_path, {**APP, "deploy": {"replicas": 0}}).replicas == 0
    with pytest.raises(ComposeError, match=r"service 'app': deploy.replicas 2 with a port"):
        load_one(tmp_path, {**APP, "ports": ["8000:8000"], "deploy": {"replicas": 2}})
    with pytest.raises(ComposeError, match=r"deploy.replicas must be 0 or more, not -1"):
        load_one(tmp_path, {**APP, "deploy": {"replicas": -1}})
    with pytest.raises(ComposeError, match=r"service 'app': invalid literal for int"):
        load_one(tmp_path, {**APP, "deploy": {"replicas": "many"}})


def test_expose_gives_a_target_port_without_publishing(tmp_path):
    loaded = load_one(tmp_path, {**APP, "expose": ["9000"]})
    assert (loaded.target_port, loaded.published_port) == (9000, None)


@pytest.mark.parametrize(
    ("written", "policy", "limit"),
    [(None, "no", None), (False, "no", None), ("always", "always", None), ("on-failure:3", "on-failure:3", 3)],
)
def test_restart_is_read_for_the_supervisor(tmp_path, written, policy, limit):
    service = load_one(tmp_path, APP if written is None else {**APP, "restart": written})
    assert (service.restart, service.max_restarts) == (policy, limit)


def test_an_unknown_restart_policy_stops(tmp_path):
    with pytest.raises(ComposeError, match=r"service 'app': restart 'on-failure:x' is none of no, always, unless-st"):
        load_one(tmp_path, {**APP, "restart": "on-failure:x"})
