"""Set-up runs once: with nothing changed, `scripts/setup` (run by every `make up`, `make demo` and `make test`)
says so in one line instead of checking packages and models again."""

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def setup() -> str:
    result = subprocess.run(["scripts/setup"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_second_setup_with_nothing_changed_does_nothing():
    setup()  # up to date already after `make test`'s own set-up; a full run otherwise
    output = setup()
    assert output.startswith("set-up: up to date")
    assert "==>" not in output  # no step ran: no package, pipenv or model check
