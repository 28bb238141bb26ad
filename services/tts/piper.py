"""Piper (English) as long-lived separate programs, shared by every session of a replica.

Piper is GPL-3.0, so it never runs inside our process: each `PiperProcess` is
``<python> -m piper -m VOICE.onnx -c VOICE.onnx.json -d WORKDIR``, which reads one
sentence per stdin line, writes ``WORKDIR/<n>.wav`` and logs ``Wrote <path>`` on stderr
once the file is complete (`services.tts.framing.StderrFramer`). Loading the voice
takes over a second, so the process lives as long as the replica; a process that dies
fails the sentence it was on and is restarted before it takes the next one.

A process synthesizes one sentence at a time, so `PiperBackend` owns a small pool
(``TTS_PIPER_PROCS``) and a thread per process: the blocking pipe I/O runs in those
threads, never on the event loop. A session cancelled mid-sentence stops waiting at
once; the sentence finishes in its thread and the process goes back to the pool.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.tts.framing import StderrFramer, WavAudio, WavWritten, parse_wav
from services.tts.text import single_line
from services.tts.voices import Backend, Voice
from shared.errors import EngineError

log = logging.getLogger(__name__)

WARM_UP_TEXT = "Hello, ready."


class PiperProcess:
    """One Piper program. Blocking API: call it from one thread at a time."""

    def __init__(
        self,
        python: Path,
        model: Path,
        config: Path,
        workdir: Path | None = None,
        *,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="tts-piper-")) if workdir is None else workdir
        self._argv = [
            str(python),
            "-m",
            "piper",
            "-m",
            str(model),
            "-c",
            str(config),
            "-d",
            str(self.workdir),
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self._framer = StderrFramer()
        self._log_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        self._on_restart = on_restart
        self.started_once = False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the program (the voice loads on its first sentence: see `warm_up`)."""
        self._reap()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in self.workdir.glob("*.wav"):  # half-written by a process that died
            stale.unlink(missing_ok=True)
        self._framer = StderrFramer()
        try:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # Own process group: a Ctrl-C in the terminal reaches our service, which
                # then closes Piper's stdin; Piper would otherwise die mid-sentence.
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start piper: {exc}") from exc
        if self.started_once and self._on_restart is not None:
            self._on_restart()
        self.started_once = True
        log.info("piper started (pid %d)", self._proc.pid)

    def warm_up(self) -> WavAudio:
        """One short sentence: loads the model and lets onnxruntime settle."""
        return self.synthesize(WARM_UP_TEXT, timeout_s=120.0)

    def restart(self) -> None:
        """Start a fresh program after a failure; errors surface on the next sentence."""
        try:
            self.start()
            self.warm_up()
        except EngineError as exc:
            log.error("piper restart failed: %s", exc)

    def synthesize(self, text: str, timeout_s: float) -> WavAudio:
        """Speak one sentence; raise `EngineError` if Piper fails, dies or hangs.

        ``text`` must hold something speakable: Piper exits on a line without any.
        """
        with self._lock:
            if not self.alive:
                self.start()
            assert self._proc is not None and self._proc.stdin is not None
            assert self._proc.stderr is not None
            try:
                self._proc.stdin.write(single_line(text).encode("utf-8") + b"\n")
                self._proc.stdin.flush()
            except OSError as exc:
                self._fail()
                raise EngineError("piper is not running", retryable=True) from exc
            return self._await_wav(self._proc.stderr.fileno(), time.monotonic() + timeout_s)

    def _await_wav(self, fd: int, deadline: float) -> WavAudio:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail()
                raise EngineError("piper timed out", retryable=True)
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            events = self._framer.feed(chunk) if chunk else self._framer.close()
            for event in events:
                if isinstance(event, WavWritten):
                    return self._take(event.path)
                log.debug("piper: %s", event.text)
                self._log_tail.append(event.text)
            if not chunk:
                code = self._fail()
                last = self._log_tail[-1] if self._log_tail else "no output"
                raise EngineError(f"piper exited with {code}: {last}", retryable=True)

    def _take(self, reported: str) -> WavAudio:
        path = Path(reported)
        # Only ever read what our own process wrote into our own directory.
        if path.resolve().parent != self.workdir.resolve():
            raise EngineError(f"piper wrote outside its directory: {reported}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EngineError(f"cannot read piper output: {exc}") from exc
        finally:
            path.unlink(missing_ok=True)
        return parse_wav(data)

    def _fail(self) -> int | None:
        """Kill a process that misbehaved; the next sentence starts a new one."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.kill()
        code = self._reap()
        log.warning("piper (exit %s) failed; it restarts for the next sentence", code)
        return code

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # Piper already gone: a broken pipe on close is expected
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def kill(self) -> None:
        """Signal the program to die now (from any thread); used by tests and shutdown."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def close(self, timeout_s: float = 5.0) -> None:
        """End of input lets Piper exit on its own; kill it if it does not."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.stdin is not None:
                try:
                    proc.stdin.close()
                    proc.wait(timeout=timeout_s)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
            self._reap()
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


class PiperBackend:
    """`SpeechBackend` over a pool of `PiperProcess`es."""

    def __init__(self, processes: Sequence[PiperProcess], *, timeout_s: float) -> None:
        if not processes:
            raise ValueError("at least one piper process")
        self._procs = list(processes)
        self._timeout_s = timeout_s
        # Idle processes. Holds at most every process, so put_nowait never overflows.
        self._free: asyncio.Queue[PiperProcess] = asyncio.Queue(maxsize=len(self._procs))
        for proc in self._procs:
            self._free.put_nowait(proc)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self._procs), thread_name_prefix="piper"
        )
        self._closed = False

    @property
    def processes(self) -> list[PiperProcess]:
        return list(self._procs)

    def load(self) -> None:
        for proc in self._procs:
            proc.start()
            proc.warm_up()

    async def synthesize(self, text: str, voice: Voice) -> WavAudio:
        """Speak ``text``; cancelling is safe (the process finishes the sentence alone)."""
        if voice.backend is not Backend.PIPER:
            raise EngineError(f"voice {voice.name} is not a piper voice")
        if self._closed:
            raise EngineError("tts is shutting down")
        proc = await self._free.get()
        loop = asyncio.get_running_loop()
        try:
            job = self._executor.submit(proc.synthesize, text, self._timeout_s)
        except RuntimeError as exc:  # the executor is shutting down
            self._free.put_nowait(proc)
            raise EngineError("tts is shutting down") from exc
        # The process returns to the pool when its thread is done, not when we stop
        # waiting: a cancelled caller must not hand a busy process to the next one.
        job.add_done_callback(lambda _job: self._after_job(proc, loop))
        return await asyncio.wrap_future(job)

    def _after_job(self, proc: PiperProcess, loop: asyncio.AbstractEventLoop) -> None:
        # Runs in the worker thread. A process that died restarts while still out of the
        # pool, so the next sentence does not pay the restart and a failure of its own.
        if not proc.alive and not self._closed:
            try:
                restart = self._executor.submit(proc.restart)
            except RuntimeError:
                pass  # shutting down: nothing to restart for
            else:
                restart.add_done_callback(lambda _job: self._give_back(proc, loop))
                return
        self._give_back(proc, loop)

    def _give_back(self, proc: PiperProcess, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._free.put_nowait, proc)
        except RuntimeError:
            pass  # the loop is closed: no one is left to use the process

    async def aclose(self) -> None:
        """Wait for running sentences (bounded by the timeout), then end the programs."""
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for proc in self._procs:
            proc.close()
