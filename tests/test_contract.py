"""The OpenAPI contract is the truth: schemathesis, with all its checks, against every HTTP service of every pattern.

Each pattern (`chapter*/*/docker-compose.yml`) is started once through the test kit; every HTTP service that serves
an OpenAPI document is run through schemathesis' `st run` (its documented, complete runner: the examples, coverage,
fuzzing and stateful phases, the last one following the links it infers between operations, e.g. a created
project's id into the model routes). Every check is on: no server error, every status and content type and body
documented, schema-valid requests accepted, invalid ones refused... A test fails on any failure, and shows it.

Reproducible and bounded: deterministic generation (no seed, no example database), a few examples per operation, one
worker. Operations whose smallest valid body is large (an image model's 3x32x32 items) skip the coverage phase,
which builds hundreds of boundary bodies for each axis, and get fuzzed only.

(The pytest plugin of schemathesis, `schemathesis.pytest.from_fixture`, breaks on pytest 9.2, which dropped the
node attribute it sets; the CLI runs the same engine, so the contract is checked the same way.)
"""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlpatterns.runner.run import pattern_dirs
from mlpatterns.testing import StartedPattern, start_pattern

PATTERNS = pattern_dirs()
ST = Path(sys.executable).with_name("st")

MAX_EXAMPLES = 10  # per operation and generation mode, in the fuzzing phase
LARGE_BODY_VALUES = 1000  # an operation whose smallest valid body holds more JSON values skips the coverage phase
STATEFUL = {("model_db", "model_db")}  # (pattern, service) whose stateful phase must run, not be skipped

CONFIG = f"""
[generation]
deterministic = true
database = "none"
max-examples = {MAX_EXAMPLES}
# Strings are Unicode text: without NUL (the schemas say so where it matters) and without unpaired surrogates,
# which are no Unicode text at all (JSON Schema's strings are sequences of code points).
allow-x00 = false
codec = "utf-8"

[checks]
enabled = true
"""


def min_values(schema, document: dict, depth: int = 0) -> int:
    """How many JSON values the smallest instance of `schema` holds (required properties, minItems items)."""
    if not isinstance(schema, dict) or depth > 20:
        return 1
    if "$ref" in schema:
        target = document
        for key in schema["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        return min_values(target, document, depth + 1)
    if options := schema.get("anyOf") or schema.get("oneOf"):
        return min(min_values(option, document, depth + 1) for option in options)
    if schema.get("type") == "array":
        return max(schema.get("minItems", 0), 1) * min_values(schema.get("items", {}), document, depth + 1)
    if schema.get("type") == "object":
        properties = schema.get("properties", {})
        return 1 + sum(min_values(properties.get(name, {}), document, depth + 1) for name in schema.get("required", []))
    return 1


def large_body_operations(document: dict) -> list[tuple[str, str]]:
    large = []
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if "schema" in body and min_values(body["schema"], document) > LARGE_BODY_VALUES:
                large.append((method.upper(), path))
    return large


def takes_encoded_images(schema, document: dict, depth: int = 0) -> bool:
    """Whether a request schema holds a string whose content is an image (`contentMediaType: image/...`): the
    schema can say "base64", not "an image", so schema-valid bytes that are no image are rightly a 422."""
    if isinstance(schema, dict) and depth <= 20:
        if "$ref" in schema:
            target = document
            for key in schema["$ref"].removeprefix("#/").split("/"):
                target = target[key]
            return takes_encoded_images(target, document, depth + 1)
        if str(schema.get("contentMediaType", "")).startswith("image/"):
            return True
        return any(takes_encoded_images(value, document, depth + 1) for value in schema.values())
    if isinstance(schema, list):
        return any(takes_encoded_images(value, document, depth + 1) for value in schema)
    return False


def image_operations(document: dict) -> list[tuple[str, str]]:
    """Operations whose body is bytes the schema cannot judge: base64 images, and raw tensors (octet-stream,
    whose shape and dtype travel in headers), where well-formed nonsense is rightly a 422."""
    return [
        (method.upper(), path)
        for path, operations in document.get("paths", {}).items()
        for method, operation in operations.items()
        for content in [operation.get("requestBody", {}).get("content", {})]
        if takes_encoded_images(content.get("application/json"), document) or "application/octet-stream" in content
    ]


def inference_operations(document: dict) -> list[tuple[str, str]]:
    """The open inference protocol's infer operations (`mlpatterns.serving.v2`): a tensor's shape and the length of
    its data must agree, which a schema cannot say, so schema-valid nonsense is rightly a 400, the protocol's
    status for a bad request."""
    return [("POST", path) for path in document.get("paths", {}) if re.fullmatch(r"/v2/models/[^/]+/infer", path)]


def config_for(document: dict) -> str:
    config = CONFIG
    images, inference = image_operations(document), inference_operations(document)
    # The status of schema-valid nonsense: 422, or the protocol's 400. One list for all: schemathesis (4.32) applies
    # the check settings of the first such [[operations]] entry to every operation it lists.
    refused = ['"400"'] * bool(inference) + ['"422"'] * bool(images)
    for method, path in dict.fromkeys(images + inference):
        config += (
            f'\n[[operations]]\ninclude-path = "{path}"\ninclude-method = "{method}"\n'
            "[operations.checks.positive_data_acceptance]\n"
            f'expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", {", ".join(refused)}, "429", "5xx"]\n'
        )
    large = large_body_operations(document)
    if large:
        config = 'suppress-health-check = ["large_base_example"]\n' + config
    for method, path in large:
        config += (
            f'\n[[operations]]\ninclude-path = "{path}"\ninclude-method = "{method}"\nphases.coverage.enabled = false\n'
        )
    return config


def openapi_document(client: httpx.Client) -> dict | None:
    answer = client.get("/openapi.json")
    if answer.status_code != 200 or answer.headers.get("content-type") != "application/json":
        return None  # model_load's file repository serves files, and no OpenAPI document
    document = answer.json()
    return document if "paths" in document else None


@pytest.fixture(scope="module", params=PATTERNS, ids=lambda path: path.name)
def target(request):
    with start_pattern(request.param) as started:
        yield started


def run_schemathesis(started: StartedPattern, name: str, document: dict, config_file: Path) -> str:
    config_file.write_text(config_for(document))
    command = [str(ST), "--no-color", "--config-file", str(config_file), "run", started.url(name) + "/openapi.json"]
    command += ["--workers", "1", "--request-timeout", "30", "--max-failures", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=config_file.parent)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis on {name} (exit {result.returncode}):\n{output[-12000:]}"
    return output


def test_every_service_keeps_its_openapi_contract(target, tmp_path, subtests):
    pattern = target.run.pattern_dir.name
    tested = 0
    for name in target.http_services():
        document = openapi_document(target.client(name))
        if document is None:
            continue
        tested += 1
        with subtests.test(msg=name):
            output = run_schemathesis(target, name, document, tmp_path / f"{name}.toml")
            assert "generated" in output and " passed" in output, output[-2000:]
            if (pattern, name) in STATEFUL:
                assert "✅ Stateful" in output, f"the stateful phase of {name} did not run:\n{output[-4000:]}"
    # A pattern of one-shot jobs only (edge_ai) has no HTTP service; one that has any must document one.
    assert tested or not target.http_services(), f"{pattern}: no service with an OpenAPI document"
