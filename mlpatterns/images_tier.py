"""The images tier: build every image of every pattern with its real Dockerfile and prove each container serves.

    python -m mlpatterns.images_tier            # what `make images` runs (through tests/test_container_images.py)

Images are found, never listed: every service of a `chapter*/*/docker-compose.yml` with a `build:` section,
and every other build stage of a pattern's Dockerfiles that declares its own CMD or ENTRYPOINT (the training
jobs, cifar10's `trainer`), tagged `mlpatterns/<pattern dir>[_<stage>]:0.1.0`. A new pattern is in the tier
the day it lands.

Docker: the daemon of DOCKER_HOST or /var/run/docker.sock where one answers; otherwise a private `dockerd`
(Debian's docker.io) on a socket under build/docker/, its layer cache kept there between runs, stopped by its
pid at the end, also on failure. Builds use the legacy builder (the daemon's BuildKit may be missing) on the
host network. Where `python:3.11-slim` cannot be pulled, a stand-in is built once from Debian's own packages
(debootstrap) with this machine's CPython and CA bundle copied in, tagged by a hash of what went into it.

Containers run as compose would run them, on the host network: each service on a free port through PORT,
with its compose command and environment (service addresses rewritten to 127.0.0.1 and the chosen ports),
named volumes as fresh Docker volumes, `redis`/`postgres` services as the runner's private servers, in
dependency order. A service must become healthy by its image's own HEALTHCHECK, or by its compose healthcheck
where that names another command, as compose does (probed every second instead of every ten), answer the
pattern's demo (the book's example requests) with no 5xx and the answers it names, and run as its declared
non-root user; a one-shot must exit 0. A third-party program's image is pulled; where it cannot be, a program the
runner runs from Debian's package (HAProxy) runs from a stand-in of that package laid out as its official image,
and any other (a log shipper) is reported "not run", which is allowed only for a service whose local stand-in
(`x-local.command`) the test suite runs.
"""

import argparse
import contextlib
import fcntl
import hashlib
import http.server
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mlpatterns.runner.backing import BackingError, PostgresServer, RedisServer, free_port, port_in_use
from mlpatterns.runner.compose import (
    PROGRAM_IMAGES,
    Service,
    image_name,
    interpolate,
    load_services,
    parse_environment,
    start_order,
)

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
DEFAULT_PYTHON_IMAGE = "python:3.11-slim"
BASES = [  # every pattern image starts from one of these (and the Python image): (tag, Dockerfile, target)
    ("mlpatterns/base:0.1.0", "docker/base.Dockerfile", None),
    ("mlpatterns/train-base:0.1.0", "docker/base.Dockerfile", "train"),
    # the digits CNN, trained once by cifar10's own pipeline: image patterns COPY --from it
    ("mlpatterns/cifar10_model:0.1.0", "chapter2_training/cifar10/Dockerfile", "model"),
]
VERSION = "0.1.0"
LABEL = "io.mlpatterns.images-tier"  # on every container and volume the tier creates
SYSTEM_SOCKET = "/var/run/docker.sock"
STANDIN_PACKAGES = [  # the shared libraries CPython's extension modules link against, and the CA store
    "ca-certificates",
    "libbz2-1.0",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libnsl2",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libtirpc3",
    "libuuid1",
    "zlib1g",
]
HEALTH_TIMEOUT = 90.0
ONESHOT_TIMEOUT = 600.0


class TierError(RuntimeError):
    """A failure the tier reports in one message: which pattern, which image or step, and the last log lines."""


def say(message: str) -> None:
    print(f"[images] {message}", flush=True)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --- the Docker daemon ----------------------------------------------------------------------------------


class Docker:
    """The docker CLI against one daemon; the legacy builder (BuildKit may be missing from the daemon)."""

    def __init__(self, host: str):
        self.host = host
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}

    def __call__(self, *args: str, check: bool = True, timeout: float | None = 300, **kwargs):
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise TierError(f"docker {' '.join(args[:3])} ...: {tail(result.stdout + result.stderr, 15)}")
        return result

    def answers(self) -> bool:
        try:
            return self("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode == 0
        except (subprocess.TimeoutExpired, FileNotFoundError):
            return False

    def has_image(self, tag: str) -> bool:
        return self("image", "inspect", tag, check=False).returncode == 0

    def inspect(self, what: str) -> dict:
        return json.loads(self("inspect", what).stdout)[0]


class PrivateDaemon:
    """`dockerd` as root on a socket and data root of its own under build/docker/ (never the system's)."""

    def __init__(self, directory: Path = BUILD / "docker"):
        self.directory = directory
        self.data_root = directory / "data"  # the layer cache: kept between runs
        # A unix socket path must stay under 108 bytes: a deep checkout keeps its sockets in /tmp instead.
        short = len(str(directory / "exec" / "containerd" / "containerd-debug.sock")) > 100
        self.exec_root = Path(tempfile.mkdtemp(prefix="mlp-docker-")) if short else directory / "exec"
        self.socket = self.exec_root / "docker.sock" if short else directory / "docker.sock"
        self.pidfile = directory / "dockerd.pid"
        self.process: subprocess.Popen | None = None

    def _unmount_leftovers(self) -> None:
        """dockerd leaves its network namespace mounted under the exec root: unmount what is ours, so that
        `make clean` can remove build/."""
        ours = (str(self.exec_root) + "/", str(self.data_root) + "/")
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(ours)), reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> Docker:
        if not shutil.which("dockerd"):
            raise TierError("dockerd is not installed: run scripts/setup-images (Debian's docker.io)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.socket.unlink(missing_ok=True)
        log = open(self.directory / "dockerd.log", "ab")  # noqa: SIM115 (the daemon writes to it until stopped)
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=overlay2",
                f"--data-root={self.data_root}",
                f"--exec-root={self.exec_root}",
                f"--pidfile={self.pidfile}",
                f"--host={self.host}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        docker = Docker(self.host)
        deadline = time.monotonic() + 60
        while not docker.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TierError(f"dockerd did not start:\n{tail((self.directory / 'dockerd.log').read_text(), 15)}")
            time.sleep(0.3)
        say(f"started a private dockerd (pid {self.process.pid}) on {self.socket}")
        return docker

    def _stop_leftover(self) -> None:
        """A daemon of ours that a killed run left behind (same pid file, same data root) is stopped first."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if cmdline and cmdline[0].endswith(b"dockerd") and f"--data-root={self.data_root}".encode() in cmdline:
            say(f"stopping the private dockerd a previous run left running (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # No `image prune`: the untagged results of stages used only by COPY --from are the cache too.
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        say(f"stopped the private dockerd (pid {self.process.pid})")
        self.process = None
        self._unmount_leftovers()
        if self.exec_root.parent != self.directory:
            shutil.rmtree(self.exec_root, ignore_errors=True)


@contextlib.contextmanager
def docker_daemon() -> Iterator[Docker]:
    """DOCKER_HOST's daemon or the system's where one answers, else a private one; one tier run at a time."""
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / "images-tier.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for host in filter(None, [os.environ.get("DOCKER_HOST"), f"unix://{SYSTEM_SOCKET}"]):
            docker = Docker(host)
            if (host != f"unix://{SYSTEM_SOCKET}" or Path(SYSTEM_SOCKET).exists()) and docker.answers():
                say(f"using the Docker daemon at {host}")
                yield docker
                return
        if os.environ.get("DOCKER_HOST"):
            raise TierError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
        daemon = PrivateDaemon()
        try:
            yield daemon.start()
        finally:
            daemon.stop()


def remove_ours(docker: Docker) -> None:
    """Every container and volume the tier created (by label), whatever state it is in."""
    containers = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if containers:
        docker("rm", "-f", "-v", *containers, check=False)
    volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, check=False)


# --- the Python base image ------------------------------------------------------------------------------


STANDIN_NOTE = ""  # the one line that says a stand-in replaces python:3.11-slim, when it does


def python_base(docker: Docker) -> str:
    """`python:3.11-slim` where it is present or can be pulled, else the stand-in (built once, then cached)."""
    if docker.has_image(DEFAULT_PYTHON_IMAGE):
        return DEFAULT_PYTHON_IMAGE
    pulled = docker("pull", DEFAULT_PYTHON_IMAGE, check=False, timeout=300)
    if pulled.returncode == 0:
        return DEFAULT_PYTHON_IMAGE
    reason = tail(pulled.stderr or pulled.stdout, 1).removeprefix("Error response from daemon: ")[:120]
    tag = standin_tag()
    global STANDIN_NOTE
    STANDIN_NOTE = (
        f"{DEFAULT_PYTHON_IMAGE} cannot be pulled ({reason}): building with the stand-in {tag} "
        f"(Debian bookworm + this machine's CPython {python_version()} and CA bundle)"
    )
    say(STANDIN_NOTE)
    if not docker.has_image(tag):
        build_standin(docker, tag)
    return tag


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def ca_bundle() -> Path:
    return Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")


def standin_tag() -> str:
    """Named by a hash of everything that goes into it: this recipe, the Python and the CA bundle."""
    digest = hashlib.sha256()
    recipe = "".join(inspect.getsource(f) for f in (build_standin, debian_image, _copy_python))
    recipe += " ".join(STANDIN_PACKAGES)
    for part in (recipe.encode(), sys.base_prefix.encode(), sys.version.encode(), ca_bundle().read_bytes()):
        digest.update(part)
    return f"mlpatterns/python-standin:{python_version()}-{digest.hexdigest()[:12]}"


def build_standin(docker: Docker, tag: str) -> None:
    """debootstrap (minbase) + this machine's CPython in /usr/local (as the official image has it) + its CA bundle."""
    if sys.version_info < (3, 11, 3):
        raise TierError(f"the stand-in needs CPython 3.11.3 or later (the lock's redis-py), this is {python_version()}")

    def add_python(rootfs: Path) -> None:
        _copy_python(rootfs / "usr" / "local")
        bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
        bundle.unlink(missing_ok=True)
        shutil.copyfile(ca_bundle(), bundle)
        subprocess.run(
            ["chroot", str(rootfs), "/usr/local/bin/python3", "-m", "ensurepip", "--default-pip"],
            check=True,
            capture_output=True,
        )

    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1",
        'CMD ["python3"]',
    ]
    debian_image(docker, tag, STANDIN_PACKAGES, changes, add_python)


def debian_image(docker: Docker, tag: str, packages: list[str], changes: list[str], finish=None) -> None:
    """An image of Debian bookworm (debootstrap, minbase) with `packages`, `finish(rootfs)` done to it, and the
    Dockerfile instructions `changes` (ENV, USER, CMD...)."""
    if not shutil.which("debootstrap"):
        raise TierError("debootstrap is not installed: run scripts/setup-images")
    started = time.monotonic()
    work = BUILD / "images" / "standin"
    shutil.rmtree(work, ignore_errors=True)
    rootfs, cache = work / "rootfs", BUILD / "images" / "debs"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={cache}",
                f"--include={','.join(packages)}",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise TierError(f"debootstrap of {tag} failed:\n{tail(result.stdout + result.stderr)}")
        for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        if finish:
            finish(rootfs)
        with tempfile.TemporaryFile(dir=work) as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(rootfs, arcname=".")
            archive.seek(0)
            args = [arg for change in changes for arg in ("--change", change)]
            docker("import", *args, "-", tag, stdin=archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"built the stand-in {tag} in {time.monotonic() - started:.0f} s")


# Third-party programs the local runner starts from Debian's package (mlpatterns/runner/compose.py PROGRAM_IMAGES):
# where their official image cannot be pulled, a stand-in of the same package is laid out as that image is (its
# configuration path, its non-root user, its command), so the compose file's mount and command work unchanged.
PROGRAM_STANDINS = {
    "haproxy": (
        ["haproxy"],
        [
            "USER haproxy",
            "WORKDIR /var/lib/haproxy",
            'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]',
        ],
    ),
}


def program_standin(docker: Docker, image: str) -> str:
    """The stand-in for a PROGRAM_STANDINS image, built once (tagged by a hash of its recipe)."""
    name = image_name(image)
    packages, changes = PROGRAM_STANDINS[name]
    config_dir = Path(PROGRAM_IMAGES[name][0]).parent.relative_to("/")  # where the compose file mounts into
    recipe = inspect.getsource(debian_image) + " ".join(packages + changes)
    tag = f"mlpatterns/{packages[0]}-standin:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if not docker.has_image(tag):
        debian_image(docker, tag, packages, changes, lambda rootfs: (rootfs / config_dir).mkdir(parents=True))
    return tag


def _copy_python(prefix: Path) -> None:
    """The running interpreter's installation, without its third-party packages, tests, Tk or IDLE."""
    source = Path(sys.base_prefix)
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__", "ensurepip/_bundled.x"}
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "bin" / minor, prefix / "bin" / minor)
    for link in ("python3", "python"):
        (prefix / "bin" / link).unlink(missing_ok=True)
        (prefix / "bin" / link).symlink_to(minor)
    (prefix / "lib").mkdir(parents=True, exist_ok=True)
    for library in (source / "lib").glob(f"lib{minor}*.so*"):
        shutil.copy2(library, prefix / "lib" / library.name, follow_symlinks=False)
    shutil.copytree(
        source / "lib" / minor,
        prefix / "lib" / minor,
        symlinks=True,
        ignore=lambda folder, names: [
            n for n in names if n in skip or n.startswith("_tkinter") or n.endswith(".a") or n.endswith(".pyc")
        ],
    )
    (prefix / "lib" / minor / "site-packages").mkdir(exist_ok=True)
    (prefix.parent.parent / "etc" / "ld.so.conf.d").mkdir(parents=True, exist_ok=True)
    (prefix.parent.parent / "etc" / "ld.so.conf.d" / "usr-local.conf").write_text("/usr/local/lib\n")
    subprocess.run(["chroot", str(prefix.parent.parent), "ldconfig"], check=True)


# --- a local index for the CPU torch wheel --------------------------------------------------------------


@contextlib.contextmanager
def wheel_index() -> Iterator[str | None]:
    """A PEP 503 index on 127.0.0.1 of the wheels in the machine's PIP_FIND_LINKS folders (the CPU torch wheel
    is not on PyPI and PyTorch's index may be out of reach); None where there are none."""
    wheels = {
        wheel.name: wheel
        for folder in os.environ.get("PIP_FIND_LINKS", "").split()
        if Path(folder).is_dir()
        for wheel in Path(folder).glob("*.whl")
    }
    if not wheels:
        yield None
        return

    def project(filename: str) -> str:
        return re.sub(r"[-_.]+", "-", filename.split("-")[0]).lower()

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            parts = [urllib.parse.unquote(p) for p in self.path.split("?")[0].split("/") if p]
            if len(parts) == 2 and parts[0] == "simple":
                links = "".join(f'<a href="/files/{n}">{n}</a>\n' for n in sorted(wheels) if project(n) == parts[1])
                body = f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()
                self._send(200 if links else 404, body, "text/html")
            elif len(parts) == 2 and parts[0] == "files" and parts[1] in wheels:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(wheels[parts[1]].stat().st_size))
                self.end_headers()
                with wheels[parts[1]].open("rb") as wheel:
                    shutil.copyfileobj(wheel, self.wfile)
            else:
                self._send(404, b"not found", "text/plain")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    # The URL is a build argument, and so part of the layer cache's key: the same port each run (one per checkout)
    # keeps the torch layers cached; a free one only where that port is taken.
    preferred = 20000 + int(hashlib.sha256(str(ROOT).encode()).hexdigest(), 16) % 10000
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", preferred), Index)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


# --- finding the images ---------------------------------------------------------------------------------


@dataclass
class Image:
    tag: str
    pattern: str  # the pattern directory, relative to the repository root
    dockerfile: str  # relative to the repository root (every build context is the root)
    target: str | None = None  # None: the final stage
    build_seconds: float = 0.0
    size: int = 0

    @property
    def what(self) -> str:
        return f"{self.dockerfile}" + (f" (target {self.target})" if self.target else "")


def dockerfile_stages(dockerfile: Path) -> list[tuple[str | None, set[str]]]:
    """(stage name, the instructions it declares itself) for every stage, in order."""
    stages: list[tuple[str | None, set[str]]] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or line[:1].isspace():
            continue
        keyword = words[0].upper()
        if keyword == "FROM":
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else None
            stages.append((name, set()))
        elif stages:
            stages[-1][1].add(keyword)
    return stages


def pattern_dirs(root: Path = ROOT) -> list[Path]:
    return sorted(d for d in root.glob("chapter*/*") if d.is_dir() and any(_dockerfiles(d)))


def _dockerfiles(pattern: Path) -> list[Path]:
    return sorted(p for p in pattern.iterdir() if p.name == "Dockerfile" or p.name.endswith(".Dockerfile"))


def discover(root: Path = ROOT) -> list[Image]:
    images: dict[tuple[str, str | None], Image] = {}
    for pattern in pattern_dirs(root):
        rel_pattern = str(pattern.relative_to(root))
        compose = pattern / "docker-compose.yml"
        services = yaml.safe_load(compose.read_text())["services"] if compose.is_file() else {}
        for service in services.values():
            if "build" not in service:
                continue
            build = service["build"] if isinstance(service["build"], dict) else {"context": service["build"]}
            dockerfile = (pattern / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
            key = (str(dockerfile.relative_to(root)), build.get("target"))
            images.setdefault(key, Image(service["image"], rel_pattern, *key))
        for dockerfile in _dockerfiles(pattern):
            stages = dockerfile_stages(dockerfile)
            for index, (name, declared) in enumerate(stages):
                final = index == len(stages) - 1
                key = (str(dockerfile.relative_to(root)), None if final else name)
                covered = key in images or (final and (key[0], name) in images)
                if covered or not declared & {"CMD", "ENTRYPOINT"} or (not final and not name):
                    continue
                stem = pattern.name if dockerfile.name == "Dockerfile" else dockerfile.name.removesuffix(".Dockerfile")
                tag = f"mlpatterns/{stem}{'' if final else '_' + name}:{VERSION}"
                images[key] = Image(tag, rel_pattern, *key)
    return list(images.values())


# --- building -------------------------------------------------------------------------------------------


def build(docker: Docker, image: Image, build_args: dict[str, str]) -> None:
    """`docker build` from the repository root; a failure names the pattern, the Dockerfile and the step."""
    dockerfile = ROOT / image.dockerfile
    declared = set(re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), re.MULTILINE))
    args = [f"--build-arg={k}={v}" for k, v in build_args.items() if k in declared]
    command = ["build", "--network=host", "-f", str(dockerfile), "-t", image.tag, *args]
    if image.target:
        command += ["--target", image.target]
    started = time.monotonic()
    result = docker(*command, str(ROOT), check=False, timeout=1800)
    image.build_seconds = time.monotonic() - started
    if result.returncode != 0:
        output = result.stdout + result.stderr
        steps = re.findall(r"^Step \d+/\d+ : .*$", output, re.MULTILINE)
        step = steps[-1] if steps else "(before the first step)"
        raise TierError(f"{image.pattern}: building {image.tag} from {image.what} failed at {step}\n{tail(output, 25)}")
    image.size = docker.inspect(image.tag)["Size"]
    say(f"built {image.tag:<48} {image.size / 1e6:7.0f} MB  {image.build_seconds:5.1f} s  ({image.what})")


def build_bases(docker: Docker, build_args: dict[str, str]) -> list[Image]:
    """The shared bases, in order: serving (the locked [packages]), training (plus [training]), the digits model."""
    bases = [Image(tag, "docker", dockerfile, target) for tag, dockerfile, target in BASES]
    for base in bases:
        build(docker, base, build_args)
    return bases


# --- running --------------------------------------------------------------------------------------------


@dataclass
class Started:
    service: Service
    container: str | None = None  # None: a backing server of the runner
    port: int | None = None
    backing: RedisServer | PostgresServer | None = None
    started_at: float = 0.0
    user: str = ""  # the USER its image declares
    image: str = ""  # the image it runs: the compose one, or a program's stand-in


@dataclass
class PatternResult:
    pattern: str
    served: list[str] = field(default_factory=list)  # "service (image) on port N: healthy in S s"
    completed: list[str] = field(default_factory=list)  # one-shots that exited 0
    answers: list[str] = field(default_factory=list)  # the demo's requests and statuses
    not_run: list[str] = field(default_factory=list)  # third-party images that could not be had, and why
    standins: list[str] = field(default_factory=list)  # third-party programs run from a stand-in of Debian's package


class ComposeRun:
    """A pattern's compose topology as containers on the host network (and the runner's Redis/PostgreSQL)."""

    def __init__(self, docker: Docker, pattern: str, run_id: str):
        self.docker = docker
        self.pattern = pattern
        self.compose_file = ROOT / pattern / "docker-compose.yml"
        self.raw = yaml.safe_load(self.compose_file.read_text())
        self.run_id = run_id
        self.started: dict[str, Started] = {}
        self.volumes: dict[str, str] = {}
        self.result = PatternResult(pattern)

    def __enter__(self) -> "ComposeRun":
        return self

    def __exit__(self, *exc) -> None:
        for started in reversed(list(self.started.values())):
            if started.container:
                self.docker("rm", "-f", "-v", started.container, check=False)
            if started.backing:
                started.backing.stop()
        for volume in self.volumes.values():
            self.docker("volume", "rm", "-f", volume, check=False)

    def fail(self, what: str, container: str | None = None) -> TierError:
        logs = ""
        if container:
            out = self.docker("logs", "--tail", "30", container, check=False)
            logs = f"\n--- last log lines of {container} ---\n{tail(out.stdout + out.stderr)}"
        return TierError(f"{self.pattern}: {what}{logs}")

    def rewrite(self, value: str) -> str:
        for started in self.started.values():
            target = started.service.target_port
            if started.port is not None and target:
                name = re.escape(started.service.name)
                value = re.sub(rf"(?<![\w.-]){name}:{target}\b", f"127.0.0.1:{started.port}", value)
        return value

    def run(self) -> PatternResult:
        services = start_order(load_services(self.compose_file))
        # A service of `deploy.replicas: 0` is a job run on demand (`docker compose run`, a load test): compose
        # starts none, so it runs last, once, against the others, and must exit 0.
        on_demand = [s for s in services if s.replicas == 0]
        for service in [s for s in services if s.replicas != 0] + on_demand:
            for name, condition in service.depends_on.items():
                if condition == "service_healthy":
                    self.wait_healthy(self.started[name])
                elif condition == "service_completed_successfully":
                    self.wait_completed(self.started[name])
            self.start(service)
        for started in self.started.values():
            if started.container and started.service.healthcheck:
                self.wait_healthy(started)
            elif started.container and not started.port:
                self.wait_completed(started)
            elif started.container:
                self.wait_listening(started)
        self.smoke()
        return self.result

    def start(self, service: Service) -> None:
        port = free_port() if service.target_port else None
        started = self.started[service.name] = Started(service, port=port)
        raw = self.raw["services"][service.name]
        if service.kind in ("redis", "postgres"):
            try:
                if service.kind == "redis":
                    started.backing = RedisServer(port).start()
                else:
                    started.backing = server = PostgresServer(port).start()
                    env = service.environment
                    user = env.get("POSTGRES_USER", "postgres")
                    server.create_database(user, env.get("POSTGRES_PASSWORD", ""), env.get("POSTGRES_DB", user))
            except BackingError as error:
                raise self.fail(f"{service.name}: {error}") from None
            return
        image = raw["image"]
        if "build" not in raw and image_name(raw["image"]) in PROGRAM_STANDINS:
            if not self.available(raw["image"]):
                image = program_standin(self.docker, raw["image"])
                self.result.standins.append(f"{service.name}: {raw['image']} cannot be pulled here, ran {image}")
        elif "build" not in raw and not self.available(raw["image"]):
            # A third-party program's image (a log shipper) that cannot be pulled here: a pattern may run such a
            # service only where its local stand-in (x-local.command) is what the test suite proves.
            if "command" not in (raw.get("x-local") or {}):
                raise self.fail(f"service {service.name}: its image {raw['image']} cannot be pulled here")
            self.result.not_run.append(
                f"{service.name} ({raw['image']}): cannot be pulled here; its local stand-in runs in `make test`"
            )
            return
        # The compose environment as Docker sees it (the runner's Service adds x-local, which is for local runs).
        compose_env = {k: interpolate(v, os.environ) for k, v in parse_environment(raw.get("environment")).items()}
        env = {key: self.rewrite(value) for key, value in compose_env.items()}
        if port:
            env["PORT"] = str(port)
        name = f"mlpt-{self.run_id}-{self.pattern.split('/')[-1]}-{service.name}"
        args = ["run", "-d", "--name", name, "--network=host", f"--label={LABEL}={self.run_id}"]
        if service.healthcheck:
            args.append("--health-interval=1s")  # the image's own check, probed every second
            image_check = (self.docker.inspect(image)["Config"].get("Healthcheck") or {}).get("Test")
            if image_check != ["CMD", *service.healthcheck]:  # compose's own check replaces the image's, as in compose
                args.append(f"--health-cmd={shlex.join(service.healthcheck)}")
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        for mount in raw.get("volumes") or []:
            source, _, rest = mount.partition(":")
            if source in (self.raw.get("volumes") or {}):
                if source not in self.volumes:
                    volume = f"mlpt-{self.run_id}-{self.pattern.split('/')[-1]}-{source}"
                    self.docker("volume", "create", f"--label={LABEL}={self.run_id}", volume)
                    self.volumes[source] = volume
                args += ["-v", f"{self.volumes[source]}:{rest}"]
            elif source.startswith((".", "/")):  # a file or directory of the pattern, bind-mounted
                args += ["-v", f"{(self.compose_file.parent / source).resolve()}:{rest}"]
        if raw.get("entrypoint"):
            entrypoint = raw["entrypoint"] if isinstance(raw["entrypoint"], list) else [raw["entrypoint"]]
            args += ["--entrypoint", entrypoint[0]]
        args.append(image)
        args += (raw.get("entrypoint") or [])[1:] if isinstance(raw.get("entrypoint"), list) else []
        args += raw.get("command") or []
        result = self.docker(*args, check=False)
        if result.returncode != 0:
            raise self.fail(f"service {service.name}: docker run {raw['image']} failed: {tail(result.stderr, 5)}")
        started.container = name
        started.image = image
        started.started_at = time.monotonic()
        self.check_user(started)

    def available(self, image: str) -> bool:
        """The image is in the daemon, or can be pulled."""
        if self.docker("image", "inspect", image, check=False).returncode == 0:
            return True
        return self.docker("pull", image, check=False, timeout=300).returncode == 0

    def state(self, started: Started) -> dict:
        return self.docker.inspect(started.container)["State"]

    def check_user(self, started: Started) -> None:
        """The image declares a non-root user and the container runs as it."""
        image = self.docker.inspect(started.image)
        user = image["Config"].get("User") or ""
        if user in ("", "0", "root") or user.startswith(("0:", "root:")):
            raise self.fail(f"service {started.service.name}: its image declares no non-root USER ({user!r})")
        config_user = self.docker.inspect(started.container)["Config"].get("User")
        if config_user != user:
            raise self.fail(f"service {started.service.name}: runs as {config_user!r}, not its image's {user!r}")
        started.user = user

    def wait_healthy(self, started: Started) -> None:
        if not started.container:
            return
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            state = self.state(started)
            if state["Status"] == "exited":
                raise self.fail(
                    f"service {started.service.name} exited with code {state['ExitCode']} before it was healthy",
                    started.container,
                )
            if state.get("Health", {}).get("Status") == "healthy":
                if started.service.name not in {s.split()[0] for s in self.result.served}:
                    declared = started.user.split(":")[0]
                    flag = "-u" if declared.isdigit() else "-un"
                    uid = self.docker("exec", started.container, "id", flag, check=False).stdout.strip()
                    if uid != declared:
                        raise self.fail(f"service {started.service.name}: runs as {uid!r}, not {declared!r}")
                    self.result.served.append(
                        f"{started.service.name} ({self.raw['services'][started.service.name]['image']}) on port "
                        f"{started.port} as uid {uid}: healthy in {time.monotonic() - started.started_at:.1f} s"
                    )
                return
            time.sleep(0.5)
        raise self.fail(
            f"service {started.service.name} was not healthy within {HEALTH_TIMEOUT:.0f} s", started.container
        )

    def wait_listening(self, started: Started) -> None:
        """A service without a healthcheck (a proxy) is up once its port accepts connections, as the runner has it."""
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while not port_in_use(started.port):
            if self.state(started)["Status"] == "exited" or time.monotonic() > deadline:
                raise self.fail(f"service {started.service.name} never listened on {started.port}", started.container)
            time.sleep(0.3)
        self.result.served.append(
            f"{started.service.name} ({started.image}) on port {started.port} as {started.user}: listening in "
            f"{time.monotonic() - started.started_at:.1f} s"
        )

    def wait_completed(self, started: Started) -> None:
        if not started.container:
            return
        deadline = time.monotonic() + ONESHOT_TIMEOUT
        while (state := self.state(started))["Status"] != "exited":
            if time.monotonic() > deadline:
                raise self.fail(f"{started.service.name} did not finish within {ONESHOT_TIMEOUT:.0f} s")
            time.sleep(0.3)
        if state["ExitCode"] != 0:
            raise self.fail(f"one-shot {started.service.name} exited with code {state['ExitCode']}", started.container)
        line = f"{started.service.name} ({self.raw['services'][started.service.name]['image']}): exit 0"
        if line not in self.result.completed:
            self.result.completed.append(line)

    def smoke(self) -> None:
        """The pattern's demo (the book's example requests) against the containers: every answer below 500."""
        module_name = self.pattern.replace("/", ".") + ".demo"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            return
        from mlpatterns.demo import DemoClient

        urls = {n: f"http://127.0.0.1:{s.port}" for n, s in self.started.items() if s.port and s.container}
        client = DemoClient(urls)
        sent: list[str] = []
        original = client.http.request

        def recording(method, url, **kwargs):
            response = original(method, url, **kwargs)
            sent.append(f"{method} {url.split('/', 3)[-1]} -> {response.status_code}")
            return response

        client.http.request = recording
        try:
            with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
                module.demo(client)
        except Exception as error:  # noqa: BLE001 (any failure of the demo is the pattern's failure)
            raise self.fail(f"the demo failed against the containers: {error!r}") from None
        finally:
            client.close()
        self.result.answers = sent
        # A 5xx, any status the demo did not expect (a 4xx it sends on purpose says so with `expect=`), or an
        # answer other than the one it names (`answer=`: the book's example request answers right).
        wrong = list(getattr(client, "unexpected", [])) or (
            [f"{client.server_errors} 5xx"] if client.server_errors else []
        )
        if wrong:
            raise self.fail(f"the demo got answers it did not expect: {wrong}; all: {sent}")


def run_oneshot(docker: Docker, image: Image, run_id: str) -> str:
    """An image outside any compose file with its own CMD: it runs to exit 0, as its declared user."""
    name = f"mlpt-{run_id}-{image.tag.split('/')[-1].replace(':', '-')}"
    try:
        result = docker("run", "--name", name, "--network=host", f"--label={LABEL}={run_id}", image.tag, check=False)
        if result.returncode != 0:
            raise TierError(
                f"{image.pattern}: {image.tag} exited with code {result.returncode}\n"
                f"--- last log lines ---\n{tail(result.stdout + result.stderr)}"
            )
        user = docker.inspect(image.tag)["Config"].get("User") or ""
        if user in ("", "0", "root"):
            raise TierError(f"{image.pattern}: {image.tag} declares no non-root USER")
        return f"{image.tag}: exit 0 as user {user}"
    finally:
        docker("rm", "-f", "-v", name, check=False)


def onnx_files(docker: Docker, tag: str) -> list[str]:
    """The ONNX models an image holds (under /app and /models)."""
    script = (
        "import glob; print('\\n'.join(glob.glob('/app/**/*.onnx', recursive=True)"
        " + glob.glob('/models/**/*.onnx', recursive=True)))"
    )
    out = docker("run", "--rm", "--network=none", "--entrypoint", "python", tag, "-c", script).stdout
    return out.split()


# --- the whole tier -------------------------------------------------------------------------------------

TRAINING_MODULES = ("sklearn", "scipy", "onnx", "skl2onnx", "torch")  # never in a serving image


def training_modules(docker: Docker, tag: str) -> list[str]:
    """The training-only packages an image can import (a serving image must have none)."""
    script = f"import importlib.util as u; print(' '.join(m for m in {TRAINING_MODULES!r} if u.find_spec(m)))"
    return docker("run", "--rm", "--network=none", "--entrypoint", "python", tag, "-c", script).stdout.split()


@dataclass
class PatternReport:
    pattern: str
    images: list[Image] = field(default_factory=list)
    served: list[str] = field(default_factory=list)  # "service (image) on port N as uid U: healthy in S s"
    completed: list[str] = field(default_factory=list)  # one-shots that exited 0
    answers: list[str] = field(default_factory=list)  # the demo's requests and statuses
    not_run: list[str] = field(default_factory=list)  # third-party images that could not be had
    standins: list[str] = field(default_factory=list)  # third-party programs run from a Debian stand-in
    models: dict[str, list[str]] = field(default_factory=dict)  # serving image -> the ONNX files it holds

    def lines(self) -> list[str]:
        out = [f"{self.pattern}:"]
        out += [f"  image {i.tag:<46} {i.size / 1e6:6.0f} MB  built in {i.build_seconds:5.1f} s" for i in self.images]
        out += [f"  served: {line}" for line in self.served] + [f"  one-shot: {line}" for line in self.completed]
        out += [f"  not run: {line}" for line in self.not_run] + [f"  stand-in: {line}" for line in self.standins]
        out += [f"  demo: {len(self.answers)} requests, each answered as expected"] if self.answers else []
        out += [f"  models in {tag}: {', '.join(files) or 'none'}" for tag, files in self.models.items()]
        return out


class Tier:
    """One run: the daemon, the Python base and the shared bases, then each pattern in turn."""

    def __init__(self, docker: Docker):
        self.docker = docker
        self.run_id = str(os.getpid())
        self.python_image = ""
        self.build_args: dict[str, str] = {}
        self.bases: list[Image] = []
        self.started = time.monotonic()

    def prepare(self) -> None:
        self.python_image = python_base(self.docker)
        if self.python_image != DEFAULT_PYTHON_IMAGE:
            self.build_args["PYTHON_IMAGE"] = self.python_image
        with wheel_index() as index:  # the digits model's stage installs torch
            self.bases = build_bases(self.docker, {**self.build_args, **({"TORCH_INDEX_URL": index} if index else {})})

    def check_pattern(self, pattern: str) -> PatternReport:
        """Build the pattern's images; run its compose topology and its other one-shot images; check them."""
        report = PatternReport(pattern)
        images = [i for i in discover() if i.pattern == pattern]
        try:
            with wheel_index() as index:
                args = {**self.build_args, **({"TORCH_INDEX_URL": index} if index else {})}
                for image in images:
                    build(self.docker, image, args)
                    report.images.append(image)
            compose = ROOT / pattern / "docker-compose.yml"
            in_compose = set()
            if compose.is_file():
                services = yaml.safe_load(compose.read_text())["services"]
                in_compose = {s.get("image") for s in services.values()}
                with ComposeRun(self.docker, pattern, self.run_id) as run:
                    result = run.run()
                report.served, report.completed, report.answers = result.served, result.completed, result.answers
                report.not_run, report.standins = result.not_run, result.standins
                for tag in dict.fromkeys(s["image"] for s in services.values() if s.get("healthcheck")):
                    if not tag.startswith("mlpatterns/"):
                        continue
                    report.models[tag] = onnx_files(self.docker, tag)
                    if found := training_modules(self.docker, tag):
                        raise TierError(f"{pattern}: the serving image {tag} holds training packages: {found}")
            for image in images:
                if image.tag not in in_compose:
                    report.completed.append(run_oneshot(self.docker, image, self.run_id))
        finally:
            remove_ours(self.docker)
        say(f"{pattern}: ok")
        return report

    def summary(self, reports: list[PatternReport]) -> list[str]:
        out = [STANDIN_NOTE or f"python base: {self.python_image}"]
        out += [f"base {b.tag:<47} {b.size / 1e6:6.0f} MB  built in {b.build_seconds:5.1f} s" for b in self.bases]
        for report in reports:
            out += report.lines()
        out.append(f"images tier: {len(reports)} patterns in {time.monotonic() - self.started:.0f} s")
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlpatterns.images_tier", description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="*", help="pattern directories (default: every pattern)")
    parser.add_argument("--list", action="store_true", help="list the images found and stop")
    args = parser.parse_args(argv)
    if args.list:
        for image in discover():
            print(f"{image.tag:<50} {image.what}")
        return 0
    patterns = [p.rstrip("/") for p in args.patterns] or [str(d.relative_to(ROOT)) for d in pattern_dirs()]
    try:
        with docker_daemon() as docker:
            tier = Tier(docker)
            tier.prepare()
            reports = [tier.check_pattern(pattern) for pattern in patterns]
    except TierError as error:
        print(f"[images] FAILED: {error}", file=sys.stderr)
        return 1
    print("\n".join(tier.summary(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
