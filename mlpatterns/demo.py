"""Send a pattern's example requests and print each request with its answer.

A pattern's `demo.py` defines `demo(client: DemoClient)`; the runner starts the pattern and calls it. A request
that is refused on purpose (to show a clear 4xx) says which status it expects: `web.post(path, body, expect=422)`;
the book's example request says the answer it must get: `web.post(path, body, answer={"prediction": "setosa"})`
(the fields named must match, at every depth; others may be there too). Any other 4xx or 5xx, and any other
answer, counts as unexpected, and `make demo` (and the images tier, which runs the demos against the containers)
ends with a summary line and fails on one.
A demo may show what a service printed (a log shipper's records, a monitor's alerts) with `client.logs(name)`:
its last output lines, or None where the demo runs against containers (the images tier).
"""

import json
import time
from collections.abc import Callable

import httpx


def _short(payload, limit: int = 300) -> str:
    text = json.dumps(payload)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metric_sum(exposition: str, prefix: str) -> float:
    """The sum of the samples of a /metrics text whose line starts with `prefix`, e.g.
    `cache_lookups_total{cache="prediction",result="hit"}` (0 when there is none yet). The demos and the tests
    (`mlpatterns.testing.metric`) read counters with it."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(prefix))


def _matches(payload, answer) -> bool:
    """Every field `answer` names is in `payload` and matches, at every depth: a list item by item, a dict field by
    field (so `{"prediction": [{"label": "setosa"}]}` passes an answer that also carries each label's score)."""
    if isinstance(answer, dict):
        return isinstance(payload, dict) and all(
            key in payload and _matches(payload[key], answer[key]) for key in answer
        )
    if isinstance(answer, list):
        return isinstance(payload, list) and len(payload) == len(answer) and all(map(_matches, payload, answer))
    return payload == answer


class ServiceClient:
    def __init__(self, name: str, base_url: str, client: "DemoClient"):
        self.name = name
        self.base_url = base_url
        self.client = client

    def request(
        self,
        method: str,
        path: str,
        body=None,
        expect: int | None = None,
        answer: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """`headers` are sent and printed with the request (chapter 6 routes by them)."""
        shown_headers = "".join(f"  {name}: {value}" for name, value in (headers or {}).items())
        print(f"\n  {method} {self.name}{path}{shown_headers}" + (f"  {_short(body)}" if body is not None else ""))
        response = self.client.http.request(method, self.base_url + path, json=body, headers=headers)
        try:
            payload = response.json()
            shown = _short(payload)
        except ValueError:
            payload, shown = None, response.text[:300]
        status = response.status_code
        wrong = answer is not None and not _matches(payload, answer)
        if expect is not None and status == expect:
            note = "  (refused as expected)"
            self.client.refused += 1
        elif expect is not None or status >= 400:
            note = f"  (UNEXPECTED{f': expected {expect}' if expect else ''})"
            self.client.unexpected.append(f"{method} {self.name}{path} -> {status}")
        elif wrong:
            note = f"  (WRONG ANSWER: expected {_short(answer)})"
            self.client.unexpected.append(f"{method} {self.name}{path} -> {status}, not {_short(answer, 80)}")
        else:
            note = ""
            self.client.answered += 1
        print(f"  -> {status} {shown}{note}")
        if status >= 500:
            self.client.server_errors += 1
        return response

    def get(
        self, path: str, expect: int | None = None, answer: dict | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.request("GET", path, expect=expect, answer=answer, headers=headers)

    def post(
        self,
        path: str,
        body,
        expect: int | None = None,
        answer: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.request("POST", path, body, expect=expect, answer=answer, headers=headers)

    def metric(self, prefix: str) -> float:
        """The sum of the samples on the service's /metrics whose line starts with `prefix` (not printed)."""
        return metric_sum(self.client.http.get(self.base_url + "/metrics").text, prefix)


class DemoClient:
    def __init__(self, urls: dict[str, str], logs: Callable[[str], str] | None = None):
        self.urls = urls
        self._logs = logs
        self.http = httpx.Client(timeout=30)
        self.answered = 0
        self.refused = 0  # 4xx asked for on purpose
        self.unexpected: list[str] = []
        self.server_errors = 0

    def logs(self, name: str) -> str | None:
        """The service's last output lines (the local runner keeps 200 per service), or None if not at hand."""
        return self._logs(name) if self._logs is not None else None

    def service(self, name: str) -> ServiceClient:
        return ServiceClient(name, self.urls[name], self)

    def summary(self) -> str:
        return (
            f"{self.answered + self.refused + len(self.unexpected)} requests: {self.answered} answered, "
            f"{self.refused} refused as expected, {len(self.unexpected)} unexpected"
            + (f" ({'; '.join(self.unexpected)})" if self.unexpected else "")
        )

    def close(self) -> None:
        self.http.close()


def wait_job(
    service: ServiceClient, job_id: str, timeout: float = 30.0, show: bool = True, answer: dict | None = None
) -> dict:
    """Ask GET /job/{job_id} until the job is done or failed, printing each answer whose state is new (`show`);
    returns the last answer, which must hold the fields of `answer` if given. For the patterns that queue jobs
    (asynchronous, sync_async)."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        reply = service.client.http.get(f"{service.base_url}/job/{job_id}").json()
        if show and (seen is None or reply["state"] != seen["state"]):
            reply = service.get(f"/job/{job_id}").json()  # printed
        seen = reply
        if seen["state"] in ("done", "failed"):
            if answer is not None and not _matches(seen, answer):
                print(f"  (WRONG ANSWER: expected {_short(answer)})")
                service.client.unexpected.append(f"GET {service.name}/job/{job_id}: not {_short(answer, 80)}")
            return seen
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not finish within {timeout:.0f} s")
