"""Read a pattern's docker-compose.yml: the one description of its topology.

Services built from this repository run as local processes with their compose `entrypoint` + `command`;
services from a `redis` or `postgres` image run from the machine's own binaries, and a service from a `haproxy`
image runs the machine's HAProxy (Debian's package) on the configuration file the compose file mounts into the
container, so both read one file (its addresses and port come from `"${VAR}"`s in it, which HAProxy takes from the
environment, and so the runner's rewritten addresses). An `x-local` key on a
service may add environment variables that only the local run needs (`{run_dir}`: the run's scratch space),
and a `command` that runs in place of the compose one where the service's image is a third-party program
this machine does not have (a log shipper: its local stand-in).

The reader is strict: it knows every key it accepts, either because the runner implements it or because it
only matters to Docker (the reason is written beside it below). Any other key stops the run with its name, so
a misspelt or new key is never silently dropped. Values are interpolated as compose does (`$VAR`, `${VAR}`,
`${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`,
`$$`), from the process environment and a `.env` file beside the compose file (the environment wins).
"""

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BACKING_IMAGES = ("redis", "postgres")
# Third-party programs the runner starts from the machine's own binary: the image's configuration path (which the
# compose file bind-mounts from the pattern directory) and the local command it is appended to (in the foreground).
PROGRAM_IMAGES = {"haproxy": ("/usr/local/etc/haproxy/haproxy.cfg", ["haproxy", "-db", "-f"])}
DEFAULT_PORTS = {"redis": 6379, "postgres": 5432}  # where other services reach them inside compose
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
RESTART = re.compile(r"no|always|unless-stopped|on-failure(:[0-9]+)?")

# Accepted keys: None when the local runner implements the key, else why it is accepted with no local effect.
TOP_LEVEL_KEYS = {
    "name": "the compose project name; a local run needs none",
    "services": None,
    "volumes": "named volumes are Docker's; local processes share the file system ({run_dir} stands in)",
    "networks": "every local service listens on 127.0.0.1",
}
SERVICE_KEYS = {
    "command": None,
    "entrypoint": None,
    "environment": None,
    "env_file": None,
    "ports": None,
    "expose": None,  # a target port without a published one: the service gets a free local port
    "depends_on": None,
    "healthcheck": None,
    "deploy": None,
    "x-local": None,
    "image": None,  # a redis/postgres/haproxy image selects the local binary; other images are Docker's
    "build": "local processes run this repository's source, not a built image",
    "pull_policy": "images are Docker's",
    "restart": None,  # the supervisor's policy for an exit: see mlpatterns/runner/run.py
    "volumes": None,  # local processes share the file system (x-local can point paths at {run_dir}); see PROGRAM_IMAGES
    "networks": "every local service listens on 127.0.0.1",
    "container_name": "local processes are named by their service",
    "labels": "container metadata",
}
DEPLOY_KEYS = {
    "replicas": None,
    "resources": "CPU and memory limits are enforced by the container runtime",
    "restart_policy": "Swarm's; the local runner follows the service's `restart` key",
    "labels": "container metadata",
    "update_config": "rolling updates replace containers, which a local run does not have",
    "rollback_config": "rolling updates replace containers, which a local run does not have",
}
HEALTHCHECK_KEYS = {
    "test": None,
    "disable": None,
    "interval": "the runner polls every 0.2 s until its own timeout",
    "timeout": "the runner polls every 0.2 s until its own timeout",
    "retries": "the runner polls every 0.2 s until its own timeout",
    "start_period": "the runner polls every 0.2 s until its own timeout",
    "start_interval": "the runner polls every 0.2 s until its own timeout",
}
DEPENDS_ON_KEYS = {
    "condition": None,
    "required": None,
    "restart": "restarting dependents is Docker's (see restart)",
}
PORT_KEYS = {
    "target": None,
    "published": None,
    "host_ip": "local services listen on 127.0.0.1",
    "protocol": "local services speak TCP",
}
ENV_FILE_KEYS = {"path": None, "required": None}
X_LOCAL_KEYS = {"environment": None, "command": None}

NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # longest first


class ComposeError(ValueError):
    """A compose file the local runner cannot run as written; the message names the file, service and key."""


@dataclass
class Service:
    name: str
    kind: str  # "process", "redis" or "postgres"
    command: list[str] = field(default_factory=list)  # entrypoint + command, as Docker runs them
    environment: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[int, int]] = field(default_factory=list)  # (published, target)
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    healthcheck: list[str] = field(default_factory=list)  # the command after "CMD"
    expose: list[int] = field(default_factory=list)  # target ports reached by other services only
    replicas: int = 1
    restart: str = "no"  # no, always, unless-stopped, on-failure or on-failure:N

    @property
    def max_restarts(self) -> int | None:
        """N of `on-failure:N`; None: no limit of its own (the supervisor's crash-loop limit still holds)."""
        return int(self.restart.split(":")[1]) if ":" in self.restart else None

    @property
    def target_port(self) -> int | None:
        if self.ports:
            return self.ports[0][1]
        return self.expose[0] if self.expose else DEFAULT_PORTS.get(self.kind)

    @property
    def published_port(self) -> int | None:
        """The port on the host, if the compose file publishes one."""
        return self.ports[0][0] if self.ports else None


# --- interpolation --------------------------------------------------------------------------------------


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution in one string; a ValueError says what is wrong with it."""
    out, i = [], 0
    while (start := text.find("$", i)) != -1:
        out.append(text[i:start])
        if text.startswith("$$", start):
            out.append("$")
            i = start + 2
        elif text.startswith("${", start):
            end = _closing_brace(text, start)
            out.append(_substitute(text[start + 2 : end], variables))
            i = end + 1
        elif name := NAME.match(text, start + 1):
            out.append(variables.get(name.group(), ""))
            i = name.end()
        else:
            raise ValueError(f"invalid interpolation in {text!r} (write $$ for a literal $)")
    out.append(text[i:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _substitute(expression: str, variables: Mapping[str, str]) -> str:
    """${NAME}, or ${NAME<op>argument}; the argument is interpolated only when it is used, as in a shell."""
    name = NAME.match(expression)
    if not name:
        raise ValueError(f"invalid variable name in ${{{expression}}}")
    value, rest = variables.get(name.group()), expression[name.end() :]
    if not rest:
        return value or ""
    operator = next((op for op in OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise ValueError(f"invalid interpolation ${{{expression}}}")
    argument = rest[len(operator) :]
    # With a colon an empty value counts as unset.
    present = value is not None and (value != "" or not operator.startswith(":"))
    if operator.endswith("-"):
        return value if present else interpolate(argument, variables)
    if operator.endswith("?"):
        if present:
            return value
        raise ValueError(f"required variable {name.group()} is missing a value: {interpolate(argument, variables)}")
    return interpolate(argument, variables) if present else ""


def _interpolate_tree(node, variables: Mapping[str, str], path: str = ""):
    """Interpolate every string value of a parsed service (keys stay as written); errors name the value."""
    if isinstance(node, str):
        try:
            return interpolate(node, variables)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    if isinstance(node, dict):
        return {
            key: _interpolate_tree(value, variables, f"{path}.{key}" if path else key) for key, value in node.items()
        }
    if isinstance(node, list):
        return [_interpolate_tree(value, variables, f"{path}[{i}]") for i, value in enumerate(node)]
    return node


# --- env files and environment --------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str | None]:
    """KEY=VALUE lines (compose's `.env` and `env_file`): `#` comments, blank lines, an optional `export `,
    quotes around a value, `#` comments after an unquoted value. A bare KEY maps to None (taken from the
    environment). Values are taken literally: `${VAR}` inside an env file is not expanded."""
    values: dict[str, str | None] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not re.fullmatch(r"[_A-Za-z][_A-Za-z0-9.-]*", key):
            raise ComposeError(f"{_shown(path)}:{number}: expected KEY=VALUE, found {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        values[key] = value if equals else None
    return values


def environment_entries(raw) -> dict[str, str | None]:
    """A compose `environment` as written: a list of KEY=VALUE or bare KEY, or a mapping; None is a bare key
    (or a null value), whose value compose takes from the environment."""
    if isinstance(raw, list):
        entries = {}
        for item in raw:
            key, equals, value = str(item).partition("=")
            entries[key] = value if equals else None
        return entries
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"environment must be a list or a mapping, not {raw!r}")
    return {key: _scalar(value) for key, value in (raw or {}).items()}


def parse_environment(raw) -> dict[str, str]:
    """A compose `environment` with its literal values; a bare key or null value is "" (the static checks)."""
    return {key: value or "" for key, value in environment_entries(raw).items()}


def _scalar(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"  # as compose writes a YAML boolean
    return None if value is None else str(value)


def _resolved(entries: dict[str, str | None], variables: Mapping[str, str]) -> dict[str, str]:
    """Bare keys take their value from `variables`; one that is unset is not set at all."""
    return {
        key: value if value is not None else variables[key]
        for key, value in entries.items()
        if value is not None or key in variables
    }


# --- ports, healthcheck, dependencies -------------------------------------------------------------------


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


def image_name(image: str) -> str:
    """`haproxy` of `haproxy:2.6`, `docker.io/library/haproxy:2.6` or `haproxy@sha256:...`."""
    return image.split("/")[-1].split(":")[0].split("@")[0]


def _kind(spec: dict) -> str:
    name = image_name(str(spec.get("image", "")))
    return name if name in BACKING_IMAGES else "process"


def _program_command(raw: dict, compose_file: Path, where: str) -> list[str] | None:
    """The local command of a PROGRAM_IMAGES service: its binary on the file the compose file mounts as its config."""
    name = image_name(str(raw.get("image", "")))
    if name not in PROGRAM_IMAGES:
        return None
    config, command = PROGRAM_IMAGES[name]
    for key in ("command", "entrypoint"):
        if key in raw:
            raise ComposeError(f"{where}: {key!r} of a {raw['image']} image is not supported (the runner runs it)")
    for mount in raw.get("volumes") or []:
        if isinstance(mount, dict):
            source, target = mount.get("source"), mount.get("target")
        else:
            source, target = (str(mount).split(":") + [""])[:2]
        if target in (config, str(Path(config).parent)) and source and source.startswith((".", "/")):
            # the file itself, or the directory that holds it (with the files it names: error pages, maps)
            path = (compose_file.parent / source).resolve() / ("" if target == config else Path(config).name)
            if not path.is_file():
                raise ComposeError(f"{where}: the configuration {_shown(path)} mounted at {config} does not exist")
            return [*command, str(path)]
    raise ComposeError(
        f"{where}: mount its configuration file (or its directory) from the pattern directory at {config} (volumes)"
    )


def _healthcheck(spec: dict) -> list[str]:
    check = spec.get("healthcheck") or {}
    test = check.get("test") or []
    if check.get("disable") or test == ["NONE"]:
        return []
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test and test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    return list(test[1:]) if test and test[0] == "CMD" else []


def _argv(raw, what: str) -> list[str]:
    """A string `command`/`entrypoint` is split as a shell would (quotes kept together); a list is kept."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return shlex.split(raw)
    if isinstance(raw, list):
        return [str(arg) for arg in raw]
    raise ValueError(f"{what} must be a string or a list, not {raw!r}")


# --- the file -------------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _check_keys(where: str, spec, accepted: dict[str, str | None], prefix: str = "", extensions=False) -> None:
    """Stop on any key that is not accepted. `x-` extension keys (compose's home for YAML anchors) are taken
    only where `extensions` says so: on a service only `x-local` is, so that a misspelling of it stops too."""
    if not isinstance(spec, dict):
        raise ComposeError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping, not {spec!r}")
    for key in spec:
        if key not in accepted and not (extensions and str(key).startswith("x-")):
            names = ", ".join(prefix + name for name in accepted) + (", x-*" if extensions else "")
            raise ComposeError(f"{where}: unsupported key {prefix + str(key)!r} (the local runner accepts: {names})")


def _depends_on(raw, where: str, names: set[str]) -> dict[str, str]:
    if isinstance(raw, list):
        return {dep: "service_started" for dep in raw}
    depends = {}
    for dep, spec in (raw or {}).items():
        spec = spec or {}
        _check_keys(where, spec, DEPENDS_ON_KEYS, f"depends_on.{dep}.")
        condition = spec.get("condition", "service_started")
        if condition not in CONDITIONS:
            raise ComposeError(f"{where}: depends_on.{dep}.condition {condition!r} is none of {', '.join(CONDITIONS)}")
        if spec.get("required", True) is False and dep not in names:
            continue  # an optional dependency that this file does not define
        depends[dep] = condition
    return depends


def _env_files(raw, base: Path, where: str) -> list[tuple[Path, bool]]:
    """(path, required) of a compose `env_file`: a string, or a list of strings or {path, required}."""
    files = []
    for entry in [raw] if isinstance(raw, str) else raw or []:
        if isinstance(entry, dict):
            _check_keys(where, entry, ENV_FILE_KEYS, "env_file.")
            files.append((base / entry["path"], entry.get("required", True)))
        else:
            files.append((base / entry, True))
    return files


def _service(name: str, raw, compose_file: Path, variables: Mapping[str, str], names: set[str]) -> Service:
    where = f"{_shown(compose_file)}: service {name!r}"
    raw = raw or {}
    _check_keys(where, raw, SERVICE_KEYS)
    deploy = raw.get("deploy") or {}
    _check_keys(where, deploy, DEPLOY_KEYS, "deploy.")
    _check_keys(where, raw.get("healthcheck") or {}, HEALTHCHECK_KEYS, "healthcheck.")
    _check_keys(where, raw.get("x-local") or {}, X_LOCAL_KEYS, "x-local.")
    for entry in raw.get("ports") or []:
        if isinstance(entry, dict):
            _check_keys(where, entry, PORT_KEYS, "ports[].")
    kind = _kind(raw)
    if kind != "process":
        for key in ("command", "entrypoint"):
            if key in raw:
                raise ComposeError(f"{where}: {key!r} of a {kind} image is not supported (the runner starts {kind})")

    try:
        raw = _interpolate_tree(raw, variables)
        deploy = raw.get("deploy") or {}
        environment: dict[str, str] = {}
        for path, required in _env_files(raw.get("env_file"), compose_file.parent, where):
            if path.is_file():
                environment.update(_resolved(read_env_file(path), variables))
            elif required:
                raise ComposeError(f"{where}: env_file {_shown(path)} does not exist")
        environment.update(_resolved(environment_entries(raw.get("environment")), variables))
        environment.update(_resolved(environment_entries((raw.get("x-local") or {}).get("environment")), variables))
        command = _program_command(raw, compose_file, where) or (
            _argv(raw.get("entrypoint"), "entrypoint") + _argv(raw.get("command"), "command")
        )
        if "command" in (raw.get("x-local") or {}):  # the local stand-in replaces entrypoint and command
            command = _argv(raw["x-local"]["command"], "x-local.command")
        ports = parse_ports(raw.get("ports"))
        expose = [int(str(port).split("/")[0]) for port in raw.get("expose") or []]
        replicas = int(deploy.get("replicas", 1))
        restart = "no" if raw.get("restart", "no") is False else str(raw.get("restart", "no"))  # YAML's bare no
    except ComposeError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise ComposeError(f"{where}: {error}") from None
    if replicas < 0:
        raise ComposeError(f"{where}: deploy.replicas must be 0 or more, not {replicas}")
    if not RESTART.fullmatch(restart):
        raise ComposeError(f"{where}: restart {restart!r} is none of no, always, unless-stopped, on-failure[:N]")
    if replicas > 1 and (ports or expose or kind != "process"):
        # Each replica would need its own address and callers a load balancer, which a local run has not.
        raise ComposeError(
            f"{where}: deploy.replicas {replicas} with a port or a backing image: the local runner starts replicas "
            "only of services without ports (workers); in compose published ports of replicas clash"
        )
    return Service(
        name=name,
        kind=kind,
        command=command,
        environment=environment,
        ports=ports,
        depends_on=_depends_on(raw.get("depends_on"), where, names),
        healthcheck=_healthcheck(raw),
        expose=expose,
        replicas=replicas,
        restart=restart,
    )


def load_services(compose_file: Path, environ: Mapping[str, str] | None = None) -> list[Service]:
    """The services of a compose file, interpolated with `environ` (default: the process environment) over
    the `.env` file beside it, if any."""
    compose_file = Path(compose_file)
    dotenv = compose_file.parent / ".env"
    variables = (
        {key: value for key, value in read_env_file(dotenv).items() if value is not None} if dotenv.is_file() else {}
    )
    variables.update(os.environ if environ is None else environ)
    spec = yaml.safe_load(compose_file.read_text()) or {}
    _check_keys(_shown(compose_file), spec, TOP_LEVEL_KEYS, extensions=True)
    raw_services = spec.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeError(f"{_shown(compose_file)}: services must be a mapping of names to services")
    return [_service(name, raw, compose_file, variables, set(raw_services)) for name, raw in raw_services.items()]


def start_order(services: list[Service]) -> list[Service]:
    """Dependencies before dependents (a topological sort); a cycle or an unknown dependency is an error."""
    by_name = {s.name: s for s in services}
    ordered: list[Service] = []
    visiting: set[str] = set()

    def visit(service: Service) -> None:
        if service in ordered:
            return
        if service.name in visiting:
            raise ComposeError(f"dependency cycle through service {service.name!r}")
        visiting.add(service.name)
        for dep in service.depends_on:
            if dep not in by_name:
                raise ComposeError(f"service {service.name!r} depends on unknown service {dep!r}")
            visit(by_name[dep])
        visiting.discard(service.name)
        ordered.append(service)

    for service in services:
        visit(service)
    return ordered
