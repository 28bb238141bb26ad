"""espeak-ng (Mandarin) as a separate program, one short process per sentence.

espeak-ng is GPL-3.0, so it runs as its own program. Why not a long-lived process like
Piper: with ``--stdout`` espeak-ng writes a single WAV header and then the audio of
everything it reads until end of input, with nothing in the stream that marks where a
sentence ends, so a shared process gives no reliable framing. A process per sentence
costs ~20-30 ms here (start-up plus synthesis of a short sentence), is trivially
cancellable (kill it) and cannot leak state between sessions.

Input is Chinese characters (UTF-8, on stdin): the ``cmn-latn-pinyin`` voice converts
them to Mandarin phonemes itself; it also accepts tone-numbered pinyin.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from services.tts.framing import WavAudio, parse_wav
from services.tts.text import single_line
from services.tts.voices import MANDARIN_MALE, Backend, Voice
from shared.errors import ConfigError, EngineError

WARM_UP_TEXT = "你好"


class EspeakBackend:
    """`SpeechBackend` running ``espeak-ng --stdout`` per sentence."""

    def __init__(
        self, binary: str, *, words_per_minute: int, timeout_s: float, max_procs: int
    ) -> None:
        self._binary = binary
        self._wpm = words_per_minute
        self._timeout_s = timeout_s
        # Bounds concurrent synthesizer processes across sessions; waiters queue in order.
        self._slots = asyncio.Semaphore(max_procs)

    def _argv(self, voice: Voice) -> list[str]:
        # -b 1: the text on stdin is UTF-8.
        return [self._binary, "-v", voice.engine_voice, "-s", str(self._wpm), "-b", "1", "--stdout"]

    def load(self) -> None:
        """Check that the program and the Mandarin voice work (blocking)."""
        if shutil.which(self._binary) is None:
            raise ConfigError(f"{self._binary} not found (apt-get install espeak-ng)")
        try:
            done = subprocess.run(
                self._argv(MANDARIN_MALE),
                input=WARM_UP_TEXT.encode(),
                capture_output=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"{self._binary} cannot speak Mandarin: {exc}") from exc
        if not parse_wav(done.stdout).pcm:
            raise ConfigError(f"{self._binary} produced no audio for Mandarin")

    async def synthesize(self, text: str, voice: Voice) -> WavAudio:
        """Speak ``text``; cancelling kills the process."""
        if voice.backend is not Backend.ESPEAK:
            raise EngineError(f"voice {voice.name} is not an espeak-ng voice")
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(voice),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise EngineError(f"cannot start {self._binary}: {exc}") from exc
            try:
                async with asyncio.timeout(self._timeout_s):
                    out, err = await proc.communicate(single_line(text).encode("utf-8"))
            except TimeoutError as exc:
                raise EngineError(f"{self._binary} timed out", retryable=True) from exc
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            reason = err.decode("utf-8", errors="replace").strip()[-200:]
            raise EngineError(f"{self._binary} exited with {proc.returncode}: {reason}")
        return parse_wav(out)

    async def aclose(self) -> None:
        """Nothing lives between sentences."""
