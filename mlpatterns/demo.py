"""Send a pattern's example requests and print each request with its answer.

A pattern's `demo.py` defines `demo(client: DemoClient)`; the runner starts the pattern and calls it.
"""

import json

import httpx


def _short(payload, limit: int = 300) -> str:
    text = json.dumps(payload)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ServiceClient:
    def __init__(self, name: str, base_url: str, client: "DemoClient"):
        self.name = name
        self.base_url = base_url
        self.client = client

    def request(self, method: str, path: str, body=None) -> httpx.Response:
        print(f"\n  {method} {self.name}{path}" + (f"  {_short(body)}" if body is not None else ""))
        response = self.client.http.request(method, self.base_url + path, json=body)
        try:
            shown = _short(response.json())
        except ValueError:
            shown = response.text[:300]
        print(f"  -> {response.status_code} {shown}")
        if response.status_code >= 500:
            self.client.server_errors += 1
        return response

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, body) -> httpx.Response:
        return self.request("POST", path, body)


class DemoClient:
    def __init__(self, urls: dict[str, str]):
        self.urls = urls
        self.http = httpx.Client(timeout=30)
        self.server_errors = 0

    def service(self, name: str) -> ServiceClient:
        return ServiceClient(name, self.urls[name], self)

    def close(self) -> None:
        self.http.close()
