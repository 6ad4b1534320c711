"""One virtual environment per peer under build/peers/<name>/venv, installed from PyPI once, with pinned versions.

The peers never enter the project's Pipfile: each gets its own interpreter, with the project's onnxruntime and
numpy versions so that every server runs the same model code. A venv is reused while its record
(build/peers/<name>/installed.txt) lists exactly the requirements asked for; anything else is installed again.
"""

import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from mlpatterns.bench.peers import Peer
from mlpatterns.runner.run import REPO_ROOT

BUILD = REPO_ROOT / "build" / "peers"


class PeerUnavailable(RuntimeError):
    """A peer that could not be installed or started: reported and skipped, the others go on."""


def requirements(peer: Peer) -> list[str]:
    return [*peer.requirements, f"onnxruntime=={version('onnxruntime')}", f"numpy=={version('numpy')}"]


def venv_python(peer: Peer, build: Path = BUILD) -> Path:
    return build / peer.name / "venv" / "bin" / "python"


def ensure_venv(peer: Peer, build: Path = BUILD, base_python: Sequence[str] = (sys.executable,)) -> Path:
    """The peer's Python, with its requirements installed; installed first if they are not (progress shown).
    `base_python`: the command that creates the venv (`<it> -m venv DIR`)."""
    wanted = "\n".join(requirements(peer)) + "\n"
    record = build / peer.name / "installed.txt"
    python = venv_python(peer, build)
    if python.exists() and record.exists() and record.read_text() == wanted:
        return python
    print(f"{peer.name}: installing {' '.join(requirements(peer))} into {python.parent.parent} (once)", flush=True)
    record.unlink(missing_ok=True)
    _run(peer, [*base_python, "-m", "venv", "--clear", str(python.parent.parent)])
    _run(peer, [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements(peer)])
    record.write_text(wanted)
    return python


def _run(peer: Peer, command: list[str]) -> None:
    """Run one install step, its output shown as it comes; a failure raises PeerUnavailable with its last lines."""
    tail: deque[str] = deque(maxlen=15)
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
        ) as process:
            for line in process.stdout:
                tail.append(line.rstrip())
                print(f"  {peer.name} | {line.rstrip()}", flush=True)
            code = process.wait()
    except (OSError, subprocess.SubprocessError) as error:
        raise PeerUnavailable(f"{peer.name}: `{' '.join(command)}` failed: {error}") from None
    if code != 0:
        last = "\n".join(tail)
        raise PeerUnavailable(f"{peer.name}: `{' '.join(command)}` exited with code {code}:\n{last}")
