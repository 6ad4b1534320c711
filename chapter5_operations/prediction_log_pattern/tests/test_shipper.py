"""The shipper: Fluent Bit's configuration tied to the API's LOG_PATH and record format in compose and Kubernetes,
and the local stand-in (shipper.py) reading the file as the configuration says. No Fluent Bit here (neither Debian
nor PyPI has it): these checks are what can be proven without it."""

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from chapter5_operations.prediction_log_pattern import shipper
from chapter5_operations.prediction_log_pattern.shipper import ConfigError, Tail, load_config
from mlpatterns.outlier import OutlierServingSettings
from mlpatterns.runner.run import REPO_ROOT
from mlpatterns.testing import start_pattern

PATTERN = Path(__file__).parents[1]
CONF = PATTERN / "fluent-bit" / "fluent-bit.conf"
COMPOSE = yaml.safe_load((PATTERN / "docker-compose.yml").read_text())
MANIFESTS = [
    doc for path in sorted((PATTERN / "manifests").glob("*.yml")) for doc in yaml.safe_load_all(path.read_text())
]
CONTAINER_LOG = "/var/log/predictions/predictions.jsonl"


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def mounts_of(container: dict) -> dict[str, str]:
    return {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}


# --- the configuration, compose and Kubernetes agree ------------------------------------------------------


def test_the_shipper_tails_the_file_the_api_writes_in_compose():
    api, fluent = COMPOSE["services"]["api"], COMPOSE["services"]["shipper"]
    assert api["environment"]["LOG_PATH"] == fluent["environment"]["LOG_PATH"] == CONTAINER_LOG
    assert api["x-local"]["environment"]["LOG_PATH"] == fluent["x-local"]["environment"]["LOG_PATH"]
    # The same volume at the log's directory; the shipper's position in a volume of its own.
    log_dir = str(Path(CONTAINER_LOG).parent)
    assert f"predictions:{log_dir}" in api["volumes"] and f"predictions:{log_dir}:ro" in fluent["volumes"]
    db = fluent["environment"]["TAIL_DB"]
    state = [volume for volume in fluent["volumes"] if volume.split(":")[1] == str(Path(db).parent)]
    assert state and not state[0].startswith("predictions:")
    assert "./fluent-bit:/fluent-bit/etc:ro" in fluent["volumes"]
    assert fluent["command"][-1] == "/fluent-bit/etc/fluent-bit.conf"


def test_the_sidecar_tails_the_file_the_api_writes_in_kubernetes():
    (deployment,) = [doc for doc in MANIFESTS if doc["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: stopped after the API, so it reads its last records
    assert env_of(api)["LOG_PATH"] == env_of(sidecar)["LOG_PATH"] == CONTAINER_LOG
    log_dir = str(Path(CONTAINER_LOG).parent)
    assert mounts_of(api)[log_dir] == mounts_of(sidecar)[log_dir] == "predictions"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes["predictions"]
    state = mounts_of(sidecar)[str(Path(env_of(sidecar)["TAIL_DB"]).parent)]
    assert state != "predictions" and "emptyDir" in volumes[state]
    config = volumes[mounts_of(sidecar)["/fluent-bit/etc"]]["configMap"]["name"]
    assert sidecar["image"] == COMPOSE["services"]["shipper"]["image"]
    assert sidecar["args"] == COMPOSE["services"]["shipper"]["command"]
    (configmap,) = [doc for doc in MANIFESTS if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == config]
    assert configmap["data"] == {path.name: path.read_text() for path in sorted(CONF.parent.glob("*.conf"))}


def test_the_configuration_reads_the_api_s_records():
    config = load_config(CONF, {"LOG_PATH": CONTAINER_LOG, "TAIL_DB": "/fluent-bit/state/predictions.db"})
    assert str(config.path) == CONTAINER_LOG + "*"  # the file and the one it was rotated to (LOG_PATH.1)
    assert Path(CONTAINER_LOG + ".1").match(str(config.path)) and Path(CONTAINER_LOG).match(str(config.path))
    assert config.db.parent != config.path.parent  # the position is never kept beside (or in) the log
    assert config.read_from_head and config.skip_long_lines
    # A record's longest line: a full 1 MiB body of rows, and its answers, fits the shipper's buffer.
    assert config.max_line >= 2 * OutlierServingSettings().max_body_bytes
    # The parser's time key and format are those of the records the API writes.
    line = json.dumps({"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "request_id": "r"})
    assert config.parser["time_key"] == "time"
    datetime.strptime(json.loads(line)["time"], shipper.python_time_format(config.parser["time_format"]))


def test_a_missing_variable_or_a_tail_without_db_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"Path uses \$\{LOG_PATH\}, which is not set"):
        load_config(CONF, {"TAIL_DB": "/x.db"})
    (tmp_path / "parsers.conf").write_text((CONF.parent / "parsers.conf").read_text())
    (tmp_path / "fluent-bit.conf").write_text(re.sub(r"\n\s+DB\s.*", "", CONF.read_text()))
    with pytest.raises(ConfigError, match="has no DB"):
        load_config(tmp_path / "fluent-bit.conf", {"LOG_PATH": "/x.jsonl"})


# --- the local stand-in reads as Fluent Bit's tail does ---------------------------------------------------


def record(number: int) -> bytes:
    return json.dumps({"time": "2026-12-01T02:12:13.801354Z", "request_id": f"r{number}"}).encode() + b"\n"


@pytest.fixture
def config(tmp_path):
    return load_config(CONF, {"LOG_PATH": str(tmp_path / "log" / "p.jsonl"), "TAIL_DB": str(tmp_path / "db" / "p.db")})


def log_file(config) -> Path:
    """The API's file: the configured Path without its `*`."""
    return Path(str(config.path).removesuffix("*"))


def ids(records: list[dict]) -> list[str]:
    return [r["request_id"] for r in records]


def test_whole_lines_only_and_the_position_survives_a_restart(config):
    log_file(config).parent.mkdir()
    log_file(config).write_bytes(record(1) + record(2)[:20])  # the second line is half written
    tail = Tail(config)
    assert ids(tail.records()) == ["r1"]
    with log_file(config).open("ab") as file:
        file.write(record(2)[20:] + record(3))
    assert ids(tail.records()) == ["r2", "r3"]
    with log_file(config).open("ab") as file:
        file.write(record(4))
    assert ids(Tail(config).records()) == ["r4"]  # a new reader resumes from the saved position
    stat = log_file(config).stat()
    assert json.loads(config.db.read_text())["files"] == {str(stat.st_ino): stat.st_size}


def test_a_replaced_or_truncated_file_is_read_from_its_start(config):
    log_file(config).parent.mkdir()
    log_file(config).write_bytes(record(1) + record(2))
    tail = Tail(config)
    assert ids(tail.records()) == ["r1", "r2"]
    log_file(config).write_bytes(record(3))  # truncated and rewritten
    assert ids(tail.records()) == ["r3"]
    replacement = log_file(config).with_suffix(".new")
    replacement.write_bytes(record(4))
    replacement.replace(log_file(config))  # a new file (a new inode) at the path, as a rotation by renaming leaves
    assert ids(tail.records()) == ["r4"]


def test_a_rotated_file_is_read_to_its_end_then_the_new_one(config):
    path = log_file(config)
    path.parent.mkdir()
    path.write_bytes(record(1))
    tail = Tail(config)
    assert ids(tail.records()) == ["r1"]
    with path.open("ab") as file:
        file.write(record(2))  # written, not yet read, when the file is rotated
    path.rename(path.with_name(path.name + ".1"))
    path.write_bytes(record(3))
    assert ids(tail.records()) == ["r2", "r3"]
    path.with_name(path.name + ".1").unlink()  # the next rotation replaces it: forgotten, nothing read again
    assert ids(tail.records()) == [] and len(tail.offsets) == 1


def test_malformed_and_too_long_lines_are_counted_not_shipped(config, capsys):
    config.max_line = 100
    log_file(config).parent.mkdir()
    log_file(config).write_bytes(b"not json\n" + b'{"request_id": "no time"}\n' + b"x" * 300 + b"\n" + record(5))
    tail = Tail(config)
    assert ids(tail.records()) == ["r5"]
    assert tail.malformed == 2 and tail.skipped == 1
    assert "shipper: not a record" in capsys.readouterr().err


def test_the_stand_in_ships_what_was_written_before_its_stop(config):
    log_file(config).parent.mkdir()
    log_file(config).write_bytes(record(1) + record(2))
    env = dict(os.environ, LOG_PATH=str(log_file(config)), TAIL_DB=str(config.db), PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "chapter5_operations.prediction_log_pattern.shipper", str(CONF)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert process.stdout.readline().startswith("shipper: tailing")
        shipped = [json.loads(process.stdout.readline()) for _ in range(2)]
        with log_file(config).open("ab") as file:
            file.write(record(3))
        process.terminate()
        rest = process.stdout.read()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert ids(shipped) + ids(json.loads(line) for line in rest.splitlines()) == ["r1", "r2", "r3"]
    assert shipped[0]["date"] == datetime(2026, 12, 1, 2, 12, 13, 801354, UTC).timestamp()


def test_the_pattern_runs_the_stand_in_from_this_configuration():
    with start_pattern(PATTERN) as started:
        assert started.run.running["shipper"].service.command[-1] == str(CONF.relative_to(REPO_ROOT))
        assert started.http_services() == ["api"]  # the shipper serves nothing: no bad-input table for it
