"""Stops what a runner started once the runner is gone, however it went (SIGKILL included).

Why a watchdog process and not a parent-death signal: PR_SET_PDEATHSIG reaches the direct child only, is
cleared when PostgreSQL's `setpriv` changes credentials, and fires when the *thread* that forked the child
ends (the supervisor thread restarts services); it also cannot remove temporary directories. A pipe can: the
runner starts this script in a session of its own with a pipe as stdin, and only the runner holds the write
end (Python's pipes are close-on-exec), so end-of-file means the runner has died. The runner tells it, one
line each:

    group PGID SIGNAL    a process group to stop with SIGNAL (PostgreSQL: SIGINT, its fast shutdown)
    forget PGID          that group is gone
    dir PATH             a temporary directory to remove
    forgetdir PATH       that directory is removed

On end-of-file every group still known gets its signal (and SIGCONT, for a stopped one), SIGKILL after
GRACE seconds, and the directories are removed. Standard library only: it runs as a script, not a module.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

GRACE = 10.0


class Watchdog:
    """The runner's end: starts the watchdog and tells it what to clean up. Thread-safe; a watchdog that is
    gone (killed by someone) is ignored, the runner's own stop still cleans up."""

    def __init__(self):
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-I", __file__],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # neither a terminal's Ctrl-C nor its hang-up reaches it
        )

    def _tell(self, line: str) -> None:
        with self.lock:
            try:
                self.process.stdin.write(line + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def group(self, pgid: int, signum: int) -> None:
        self._tell(f"group {pgid} {int(signum)}")

    def forget(self, pgid: int) -> None:
        self._tell(f"forget {pgid}")

    def directory(self, path: str) -> None:
        self._tell(f"dir {path}")

    def forget_directory(self, path: str) -> None:
        self._tell(f"forgetdir {path}")

    def close(self) -> None:
        """After the runner's own stop: the watchdog has nothing left to do and exits."""
        with self.lock:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(GRACE + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs; zombies (dead, not yet reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_groups(groups: dict[int, int], grace: float = GRACE) -> None:
    """Signal every group, wait until all are gone, SIGKILL those left after `grace` seconds."""
    for pgid, signum in groups.items():
        for each in (signum, signal.SIGCONT):
            try:
                os.killpg(pgid, each)
            except ProcessLookupError:
                break
    deadline = time.monotonic() + grace
    left = list(groups)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pgid for pgid in left if group_alive(pgid)]
    for pgid in left:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # only the end of the pipe stops us
    groups: dict[int, int] = {}
    directories: set[str] = set()
    for line in sys.stdin:
        verb, _, argument = line.rstrip("\n").partition(" ")
        if verb == "group":
            pgid, signum = argument.split()
            groups[int(pgid)] = int(signum)
        elif verb == "forget":
            groups.pop(int(argument), None)
        elif verb == "dir":
            directories.add(argument)
        elif verb == "forgetdir":
            directories.discard(argument)
    stop_groups(groups)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
