"""The local runner: every service of a pattern's docker-compose.yml as a process on 127.0.0.1."""

from mlpatterns.runner.run import PatternRun, RunnerError, run_pattern

__all__ = ["PatternRun", "RunnerError", "run_pattern"]
