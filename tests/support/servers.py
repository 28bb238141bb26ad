"""Start a test server program that prints ``LISTENING <url>`` and stops when its stdin closes."""

from __future__ import annotations

import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def listening_server(args: Sequence[str], *, timeout_s: float = 120.0) -> Iterator[str]:
    """Run ``python -m <args>``; yield its base URL once it listens; stop it afterwards."""
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # keeps reading so the child never blocks on a full pipe
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while not (line := lines.get(timeout=timeout_s)).startswith("LISTENING "):
                if not line:
                    log.seek(0)
                    raise RuntimeError(f"{args[0]} exited before listening:\n{log.read()[-3000:]}")
            yield line.split()[1]
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # the server's cue to stop
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            assert proc.stdout is not None
            proc.stdout.close()
