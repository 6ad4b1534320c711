"""Where the machine's CPU went during a load run: the server under test, the load tool, or anything else.

On a shared machine other processes can take a core in the middle of a run; the bench reports their share so
a disturbed run is seen as such, and the server's CPU time per request, which such neighbours disturb less
than req/s. Linux only (/proc).
"""

import os
import resource
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds spent on every core, all processes, since boot (idle and iowait excluded)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]  # the first line sums every core
    return (sum(fields) - fields[3] - fields[4]) / TICK


def _stat(pid: int | str) -> list[str]:
    """A process's /proc/PID/stat fields after its command name (which may hold spaces): [0] is its state, [1] its
    parent, [2] its process group, [11] and [12] its user and system CPU time in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _cpu_seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / TICK


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process (e.g. a database's backend serving one connection)."""
    return _cpu_seconds(_stat(pid))


def _group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a server: its process group (a server and its workers)
    and every process descended from its leader, for servers that start workers in sessions of their own
    (BentoML's, Ray's actors)."""
    processes: dict[int, tuple[int, int, float]] = {}  # pid -> (parent pid, process group, CPU seconds)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = _stat(pid)
        except OSError:
            continue  # it ended meanwhile
        processes[int(pid)] = (int(fields[1]), int(fields[2]), _cpu_seconds(fields))
    members = {pid for pid, (_, group, _) in processes.items() if group == pgid}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    pending = list(members)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in members:
                members.add(child)
                pending.append(child)
    return sum(processes[pid][2] for pid in members)


def _own_and_children() -> float:
    """CPU seconds of this process and of its waited-for children (the load tool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class CpuShare:
    server_seconds: float  # CPU time of the server's process group
    other_fraction: float  # share of the whole machine used by processes outside the bench


class CpuMeter:
    """`with CpuMeter(server_pgid) as meter: <run the load tool>`, then `meter.result`."""

    def __init__(self, server_pgid: int):
        self.pgid = server_pgid
        self.result: CpuShare | None = None

    def __enter__(self) -> "CpuMeter":
        self._start = (os.times().elapsed, _machine_busy(), _group_cpu(self.pgid), _own_and_children())
        return self

    def __exit__(self, *exc) -> None:
        end = (os.times().elapsed, _machine_busy(), _group_cpu(self.pgid), _own_and_children())
        elapsed, busy, server, ours = (b - a for a, b in zip(self._start, end, strict=True))
        capacity = elapsed * (os.cpu_count() or 1)  # /proc/stat counts every online core
        self.result = CpuShare(server, max(0.0, (busy - server - ours) / capacity) if capacity else 0.0)
