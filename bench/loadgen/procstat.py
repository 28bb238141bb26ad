"""CPU time per process from ``/proc`` (a process and its descendants, e.g. Piper)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (0 if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces: fields are counted after its closing ')'.
    fields = stat.rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own + sum(cpu_seconds(child) for child in _children(pid))


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # steal included; guest time is already in user
    return (total - idle) / _TICK, total / _TICK


@dataclass
class CpuSnapshot:
    at: float
    per_process: dict[str, float]
    machine_busy: float
    machine_total: float


def snapshot(pids: dict[str, list[int]]) -> CpuSnapshot:
    busy, total = machine_cpu_seconds()
    return CpuSnapshot(
        at=time.monotonic(),
        per_process={name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()},
        machine_busy=busy,
        machine_total=total,
    )


def usage(first: CpuSnapshot, last: CpuSnapshot) -> dict[str, float]:
    """Percent of one core per name between two snapshots, plus the machine's share.

    ``machine`` is the whole machine's busy time (100 per core); ``other`` is what
    processes outside this benchmark used meanwhile.
    """
    wall = max(1e-6, last.at - first.at)
    out = {
        name: round(100 * (last.per_process[name] - first.per_process.get(name, 0.0)) / wall, 1)
        for name in last.per_process
    }
    cores = max(1e-6, (last.machine_total - first.machine_total) / wall)
    machine = 100 * (last.machine_busy - first.machine_busy) / wall
    out["machine"] = round(machine, 1)
    out["machine_capacity"] = round(100 * cores, 1)
    out["other"] = round(
        max(
            0.0,
            machine - sum(v for k, v in out.items() if k not in ("machine", "machine_capacity")),
        ),
        1,
    )
    return out
