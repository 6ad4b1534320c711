"""Read a pattern's docker-compose.yml: the one description of its topology.

Services built from this repository run as local processes with their compose `command`; services from a
`redis` or `postgres` image run from the machine's own binaries. An `x-local` key on a service may add
environment variables that only the local run needs.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

BACKING_IMAGES = ("redis", "postgres")
DEFAULT_PORTS = {"redis": 6379, "postgres": 5432}  # where other services reach them inside compose


@dataclass
class Service:
    name: str
    kind: str  # "process", "redis" or "postgres"
    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[int, int]] = field(default_factory=list)  # (published, target)
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    healthcheck: list[str] = field(default_factory=list)  # the command after "CMD"

    @property
    def target_port(self) -> int | None:
        return self.ports[0][1] if self.ports else DEFAULT_PORTS.get(self.kind)

    @property
    def published_port(self) -> int | None:
        """The port on the host, if the compose file publishes one."""
        return self.ports[0][0] if self.ports else None


def parse_environment(raw) -> dict[str, str]:
    """A compose `environment`, as a list of KEY=VALUE or a mapping."""
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: "" if value is None else str(value) for key, value in (raw or {}).items()}


def parse_ports(raw) -> list[tuple[int, int]]:
    """(published, target) of "8000", "8080:8000", "127.0.0.1:8080:8000/tcp" or {target: 8000, published: 8080}."""
    ports = []
    for entry in raw or []:
        if isinstance(entry, dict):
            ports.append((int(entry.get("published", entry["target"])), int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            ports.append((int(parts[-2]) if len(parts) > 1 else int(parts[-1]), int(parts[-1])))
    return ports


def _kind(spec: dict) -> str:
    image = spec.get("image", "")
    for backing in BACKING_IMAGES:
        if image.split("/")[-1].startswith(backing + ":") or image.split("/")[-1] == backing:
            return backing
    return "process"


def _healthcheck(spec: dict) -> list[str]:
    test = (spec.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test and test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    return list(test[1:]) if test and test[0] == "CMD" else []


def load_services(compose_file: Path) -> list[Service]:
    spec = yaml.safe_load(Path(compose_file).read_text())
    services = []
    for name, raw in spec.get("services", {}).items():
        depends = raw.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: "service_started" for dep in depends}
        else:
            depends = {dep: (cond or {}).get("condition", "service_started") for dep, cond in depends.items()}
        command = raw.get("command") or []
        environment = parse_environment(raw.get("environment"))
        environment.update(parse_environment((raw.get("x-local") or {}).get("environment")))
        services.append(
            Service(
                name=name,
                kind=_kind(raw),
                command=command.split() if isinstance(command, str) else list(command),
                environment=environment,
                ports=parse_ports(raw.get("ports")),
                depends_on=depends,
                healthcheck=_healthcheck(raw),
            )
        )
    return services


def start_order(services: list[Service]) -> list[Service]:
    """Dependencies before dependents (a topological sort); a cycle or an unknown dependency is an error."""
    by_name = {s.name: s for s in services}
    ordered: list[Service] = []
    visiting: set[str] = set()

    def visit(service: Service) -> None:
        if service in ordered:
            return
        if service.name in visiting:
            raise ValueError(f"dependency cycle through service {service.name!r}")
        visiting.add(service.name)
        for dep in service.depends_on:
            if dep not in by_name:
                raise ValueError(f"service {service.name!r} depends on unknown service {dep!r}")
            visit(by_name[dep])
        visiting.discard(service.name)
        ordered.append(service)

    for service in services:
        visit(service)
    return ordered
