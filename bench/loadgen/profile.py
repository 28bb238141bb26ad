"""Sample the gateway with py-spy during a level; summarize where its time goes."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: int, out: Path) -> str | None:
    """Collapsed stacks of ``pid`` for ``seconds``; returns an error text or None."""
    binary = py_spy()
    if binary is None:
        return "py-spy is not installed"
    proc = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0 or not out.exists():
        return output.decode(errors="replace").strip()[-500:] or f"py-spy exited {proc.returncode}"
    return None


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def summarize(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by own time and by inclusive time, as % of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / max(1, total), 1)) for name, n in c.most_common(top)]

    return {"samples": total, "own_pct": pct(own), "inclusive_pct": pct(inclusive)}
