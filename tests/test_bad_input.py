"""Bad input, for every HTTP service of every pattern: a 4xx with a clear message, never a 5xx, and the
service keeps serving.

Each pattern (`chapter*/*/docker-compose.yml`) is started once. Its HTTP services (processes with a port) are
found, and for every operation with a JSON body in a service's OpenAPI document the table below is sent, each
case built from the operation's schema (and from `/metadata`'s sample where the body is a `data` batch).
Every service, with OpenAPI or not (model_load's file repository), gets the bad paths and methods. A failure
names the pattern and the case (the test id) and the service and route (the subtest).
A pattern's own messages are asserted in its own tests; here only what every service must do.
"""

import copy
import http.client
import json
import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from mlpatterns.runner.run import pattern_dirs
from mlpatterns.testing import StartedPattern, assert_healthy, assert_refused, start_pattern

PATTERNS = pattern_dirs()

# (pattern, service, route, case) -> why it fails today. Each is an xfail that fails once the service is fixed.
KNOWN_FAILURES: dict[tuple[str, str, str, str], str] = {}  # (pattern, service, route, case) -> why it fails

# (body, status or None for any 4xx, a text the detail must contain or None)
Probe = tuple[bytes, int | None, str | None]


@dataclass
class Operation:
    method: str
    path: str  # path parameters filled in
    schema: dict  # the JSON body's schema, $refs resolved
    valid: dict  # a body the service accepts (from the OpenAPI example, /metadata or the schema)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def item(self) -> list | None:
        """One item of the body's `data` batch, if it has one and it is a list of values."""
        data = self.schema.get("properties", {}).get("data", {})
        item = self.valid["data"][0] if data.get("type") == "array" and self.valid.get("data") else None
        return item if isinstance(item, list) else None  # an image (a base64 string) has no values to change


@dataclass
class Service:
    name: str
    client: httpx.Client
    health: str
    openapi: bool
    operations: list[Operation] = field(default_factory=list)


# -- finding the services and their operations ---------------------------------------------------------


def resolve(schema, document: dict, depth: int = 0):
    """The schema with every `#/components/...` reference replaced by what it names."""
    if depth > 20:
        return schema
    if isinstance(schema, list):
        return [resolve(part, document, depth + 1) for part in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = document
        for key in schema["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        return resolve(target, document, depth + 1)
    return {key: resolve(value, document, depth + 1) for key, value in schema.items()}


def non_null(schema: dict) -> dict:
    """`X | None` is X here (a null is then allowed)."""
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    return options[0] if len(options) == 1 else schema


def nullable(schema: dict) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", []))


def synthesize(schema: dict):
    """The smallest value the schema asks for: required fields only, one item per array."""
    schema = non_null(schema)
    kind = schema.get("type")
    if kind == "object":
        return {name: synthesize(schema["properties"][name]) for name in schema.get("required", [])}
    if kind == "array":
        return [synthesize(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    return {"string": "x" * max(1, schema.get("minLength", 1)), "number": 1.0, "integer": 1, "boolean": True}.get(kind)


def discover(started: StartedPattern, name: str) -> Service:
    client = started.client(name)
    answer = client.get("/openapi.json")
    openapi = answer.status_code == 200 and "paths" in answer.json()
    service = Service(name, client, started.health_path(name), openapi)
    if not openapi:
        return service
    document = answer.json()
    metadata = client.get("/metadata")
    sample = metadata.json().get("data_sample") if metadata.status_code == 200 else None
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            body = spec.get("requestBody", {}).get("content", {}).get("application/json", {})
            if "schema" not in body:
                continue
            schema = resolve(body["schema"], document)
            valid = (schema.get("examples") or [None])[0]
            if valid is None and sample and "data" in schema.get("properties", {}):
                valid = {"data": sample}
            if valid is None and re.fullmatch(r"/v2/models/[^/]+/infer", path):
                valid = inference_request(client, path)
            filled = re.sub(r"\{[^}]+\}", "x", path)
            service.operations.append(Operation(method.upper(), filled, schema, valid or synthesize(schema)))
    return service


def inference_request(client: httpx.Client, path: str) -> dict | None:
    """A valid request of the open inference protocol for the model of an infer path (whose example would be an
    image): one item of zeros, as its metadata describes the input."""
    metadata = client.get(path.removesuffix("/infer"))
    if metadata.status_code != 200:
        return None
    (tensor,) = metadata.json()["inputs"]
    shape = [max(size, 1) for size in tensor["shape"]]
    return {"inputs": [{**tensor, "shape": shape, "data": [0.0] * math.prod(shape)}]}


@pytest.fixture(scope="module", params=PATTERNS, ids=lambda path: path.name)
def target(request):
    with start_pattern(request.param) as started:
        yield started, [discover(started, name) for name in started.http_services()]


# -- the table: each case turns an operation into the requests to send -----------------------------------


def body(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity become the JSON text `NaN`, `Infinity`


def innermost(item: list) -> list:
    """The first list of numbers inside `item` (in place)."""
    return item if not item or not isinstance(item[0], list) else innermost(item[0])


def every_innermost(item: list, change: Callable[[list], list]) -> list:
    return change(item) if not item or not isinstance(item[0], list) else [every_innermost(x, change) for x in item]


def with_first_value(item: list, value) -> list:
    changed = copy.deepcopy(item)
    innermost(changed)[0] = value
    return changed


def shape(item) -> str:
    return "x".join(map(str, _dims(item)))


def _dims(item) -> list[int]:
    return [len(item), *_dims(item[0])] if isinstance(item, list) else []


TYPE_ERRORS = {  # JSON type -> (values of other types, pydantic's message for them)
    "string": ([1, False], "valid string"),
    "number": (["1.5", True], "valid number"),
    "integer": (["1", True], "valid integer"),
    "boolean": (["yes", 2], "valid boolean"),
    "object": ([[], "x"], "valid dictionary"),
    "array": (["x", {}], "valid list"),
}


def malformed_json(op: Operation) -> list[Probe]:
    return [(b'{"data": [1,', None, "JSON decode error"), (b"{'single': 'quotes'}", None, "JSON decode error")]


def empty_body(op: Operation) -> list[Probe]:
    return [(b"", None, "Field required")]


def wrong_top_level_type(op: Operation) -> list[Probe]:
    message = "valid dictionary" if op.schema.get("type") == "object" else None
    return [(body(value), None, message) for value in ([op.valid], "text", 1, None)]


def required_missing(op: Operation) -> list[Probe]:
    required = op.schema.get("required", [])
    bodies = [{}] if required else []
    if len(required) > 1:
        bodies += [{k: v for k, v in op.valid.items() if k != name} for name in required]
    return [(body(value), None, "Field required") for value in bodies]


def wrong_types(op: Operation) -> list[Probe]:
    probes = []
    for name, schema in op.schema.get("properties", {}).items():
        values, message = TYPE_ERRORS.get(non_null(schema).get("type"), ([], None))
        for value in [*values, *([] if nullable(schema) else [None])]:
            probes.append((body({**op.valid, name: value}), None, message))
    if op.item is not None:  # where the numbers of a batch item are
        for value in ("5.1", True, None, [1.0], {}):
            probes.append((body({**op.valid, "data": [with_first_value(op.item, value)]}), None, "valid number"))
    return probes


def nan_and_infinity(op: Operation) -> list[Probe]:
    places = []
    if op.item is not None:
        places.append(lambda v: {**op.valid, "data": [with_first_value(op.item, v)]})
    for name, schema in op.schema.get("properties", {}).items():
        schema = non_null(schema)
        if schema.get("type") == "number":
            places.append(lambda v, name=name: {**op.valid, name: v})
        elif schema.get("type") == "object" and not schema.get("properties"):  # free-form: any JSON value
            places.append(lambda v, name=name: {**op.valid, name: {"value": v}})
    return [(body(place(v)), None, None) for place in places for v in (math.nan, math.inf, -math.inf)]


def batch_shape(op: Operation) -> list[Probe]:
    """Ragged and wrong-width items, an empty batch, an item without its batch axis."""
    if op.item is None:
        return []
    item, expected = op.item, f"must have shape {shape(op.item)}"
    ragged = copy.deepcopy(item)
    innermost(ragged).pop()
    return [
        (body({**op.valid, "data": [item, ragged]}), None, "of equal"),
        (body({**op.valid, "data": [every_innermost(item, lambda row: [*row, row[-1]])]}), None, expected),
        (body({**op.valid, "data": [every_innermost(item, lambda row: row[:-1])]}), None, expected),
        (body({**op.valid, "data": []}), None, "at least 1 item"),
        (body({**op.valid, "data": item}), None, None),
    ]


JSON_CASES = {
    "malformed JSON": malformed_json,
    "empty body": empty_body,
    "wrong top-level type": wrong_top_level_type,
    "required fields missing": required_missing,
    "wrong types": wrong_types,
    "NaN and Infinity": nan_and_infinity,
    "ragged, wrong-width and empty batch": batch_shape,
}


def post(service: Service, op: Operation, content, content_type: str = "application/json") -> httpx.Response:
    return service.client.request(op.method, op.path, content=content, headers={"content-type": content_type})


@contextmanager
def known_failure(key: tuple[str, str, str, str]):
    """A strict xfail for one listed (pattern, service, route, case): it must fail, and says why."""
    reason = KNOWN_FAILURES.get(key)
    if reason is None:
        yield
        return
    try:
        yield
    except AssertionError:
        pytest.xfail(reason)
    pytest.fail(f"[XPASS(strict)] {key} passes now: remove it from KNOWN_FAILURES ({reason})")


def operations(target) -> list[tuple[StartedPattern, Service, Operation]]:
    started, services = target
    return [(started, service, op) for service in services for op in service.operations]


@pytest.mark.parametrize("case", JSON_CASES)
def test_bad_json_body_is_a_4xx(target, case, subtests):
    for started, service, op in operations(target):
        probes = JSON_CASES[case](op)
        if not probes:
            continue
        key = (started.run.pattern_dir.name, service.name, op.route, case)
        with subtests.test(msg=f"{service.name} {op.route}"), known_failure(key):
            for content, status, message in probes:
                assert_refused(post(service, op, content), status, message)
            assert_healthy(service.client, service.health)


def test_oversized_body_is_a_413(target, subtests):
    """Declared too large (and never sent), one byte over the limit with Content-Length and chunked; at the
    limit it is read (and refused for what it is, not for its size)."""
    for started, service, op in operations(target):
        key = (started.run.pattern_dir.name, service.name, op.route, "oversized body")
        with subtests.test(msg=f"{service.name} {op.route}"), known_failure(key):
            declared = declare_only(service, op, length=2**40)
            assert_refused(declared, 413, "request body is larger than ")
            limit = int(re.search(r"larger than (\d+) bytes", declared.json()["detail"])[1])

            def padded(size: int) -> bytes:
                return b'{"pad": "' + b"x" * (size - 11) + b'"}'

            over = padded(limit + 1)
            chunks = (over[i : i + 65536] for i in range(0, len(over), 65536))
            for content in (over, chunks):
                assert_refused(post(service, op, content), 413, f"request body is larger than {limit} bytes")
            at_limit = post(service, op, padded(limit))
            assert_refused(at_limit)
            assert at_limit.status_code != 413
            assert_healthy(service.client, service.health)


def declare_only(service: Service, op: Operation, length: int) -> httpx.Response:
    """Send headers announcing `length` bytes and no body: the service must refuse without waiting for it."""
    address = urlsplit(str(service.client.base_url))
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest(op.method, op.path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        answer = connection.getresponse()
        content = answer.read()
    finally:
        connection.close()
    request = httpx.Request(op.method, str(service.client.base_url) + op.path)
    return httpx.Response(answer.status, headers=answer.getheaders(), content=content, request=request)


def test_bad_paths_and_methods_are_4xx(target, subtests):
    started, services = target
    for service in services:
        wrong_method = (service.operations[0].path, "DELETE") if service.operations else (service.health, "POST")
        cases = {
            "unknown path": ("GET", "/no/such/path", 404),
            "path outside the service": ("GET", "/%2e%2e/%2e%2e/etc/passwd", 404),
            "wrong method": (wrong_method[1], wrong_method[0], 405),
        }
        for case, (method, path, status) in cases.items():
            key = (started.run.pattern_dir.name, service.name, f"{method} {path}", case)
            with subtests.test(msg=f"{service.name} {method} {path}: {case}"), known_failure(key):
                response = service.client.request(method, path)
                if service.openapi:  # FastAPI's JSON detail; the file repository answers in HTML
                    assert_refused(response, status)
                else:
                    assert response.status_code == status, f"{method} {path}: {response.status_code}"
                assert_healthy(service.client, service.health)


def test_still_serving_after_the_table(target, subtests):
    """Run last for each pattern: health, and a valid request of every operation (one at least a 2xx)."""
    started, services = target
    for service in services:
        with subtests.test(msg=service.name):
            assert_healthy(service.client, service.health)
            answers = {op.route: post(service, op, body(op.valid)).status_code for op in service.operations}
            assert all(status < 500 for status in answers.values()), answers
            assert not answers or any(200 <= status < 300 for status in answers.values()), answers
