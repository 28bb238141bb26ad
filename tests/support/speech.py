"""Real speech for tests, made at test time with espeak-ng and sox."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path


def synthesize(
    text: str,
    out_dir: Path,
    *,
    voice: str = "en-us",
    rate: int = 16000,
    words_per_minute: int = 160,
) -> bytes:
    """Speak ``text`` and return PCM16 mono at ``rate`` Hz."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required for speech fixtures (apt-get install {tool})")
    raw = out_dir / f"speech-{abs(hash((text, voice)))}.wav"
    conv = raw.with_suffix(f".{rate}.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(conv)],
        check=True,
        capture_output=True,
    )
    with wave.open(str(conv), "rb") as w:
        return w.readframes(w.getnframes())


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(int(seconds * rate) * 2)
