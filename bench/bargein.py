"""Barge-in stop time of real calls through the gateway, from the client's side.

    ./run bench bargein [--interruptions 20] [--out bench/results/bargein.json]
    (or: .venv/bin/python bench/bargein.py ...)

Starts the whole stack (its own NATS, embedded engines) unless ``--url`` points at a
running gateway. One Bella call asks a question; as soon as the first audio of the answer
arrives, the client starts speaking again (a new question, streamed at real-time pace in
100 ms frames), which interrupts the answer; the new question's answer is interrupted the
same way, ``--per-call`` times per call, in new calls until ``--interruptions`` were made.
Per interruption, from the send time of the 100 ms frame holding the first voiced 10 ms of
the interrupting speech (found by its energy):

* vad_onset: -> VOICE_STARTING received (how long VAD takes to notice the speech)
* cancel: -> LLM_CHAT_CANCELLED received
* last_old_audio: -> the last audio byte of the interrupted answer received (audio after
  the cancel event would be a bug; it is counted as ``audio_after_cancel``)

An interruption whose answer was already complete (all its audio sent before the speech
was confirmed) has no cancel; it is counted as ``missed`` and left out of the figures.
p50/p95 are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.stack.bella_client import BellaCall, Received
from services.stack.runner import running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

QUESTIONS = [
    "Tell me a long story about a brave little dragon.",
    "Wait, tell me instead about the history of Rome.",
    "No, describe how a steam engine works.",
    "Actually, explain how bread is baked.",
    "Stop, tell me about the planets of the solar system.",
]
SYSTEM_PROMPT = "You are a storyteller. Answer with long, detailed stories."
FRAME_MS = 100
RATE = 16000


@dataclass
class Interruption:
    index: int
    vad_onset_ms: float | None
    cancel_ms: float | None
    last_old_audio_ms: float | None
    audio_after_cancel: int  # audio frames received after the cancel, before the new answer
    answer_done_first: bool  # the answer was complete before the user spoke (nothing to cut)


def first_voiced_ms(pcm: bytes, threshold_dbfs: float = -35.0) -> int:
    """Offset of the first 10 ms window louder than ``threshold_dbfs``."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    window = RATE // 100
    for i in range(0, len(samples) - window, window):
        rms = float(np.sqrt(np.mean(samples[i : i + window] ** 2)))
        if rms > 0 and 20 * np.log10(rms) > threshold_dbfs:
            return i * 1000 // RATE
    return 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


async def _speak(call: BellaCall, pcm: bytes, voiced_ms: int) -> float:
    """Stream ``pcm`` at real-time pace; return when its first voiced frame was sent."""
    step = RATE * 2 * FRAME_MS // 1000
    voiced_frame = voiced_ms // FRAME_MS
    t0 = time.monotonic()
    voiced_at = t0
    for i, offset in enumerate(range(0, len(pcm), step)):
        delay = t0 + i * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await call.ws.send(pcm[offset : offset + step])
        if i == voiced_frame:
            voiced_at = time.monotonic()
    return voiced_at


def _measure(
    received: list[Received], old_begin: int, start: int, voiced_at: float, index: int
) -> Interruption:
    after = received[start:]
    done_first = any(r.name == "TTS_END" for r in received[old_begin:start])
    onset = next((r for r in after if r.name == "VOICE_STARTING"), None)
    cancel = next((r for r in after if r.name == "LLM_CHAT_CANCELLED"), None)

    def ms(r: Received | None) -> float | None:
        return None if r is None else round((r.at - voiced_at) * 1000, 1)

    if cancel is None:
        return Interruption(index, ms(onset), None, None, 0, done_first)
    at = after.index(cancel)
    # The interrupted answer's audio, from its start (some may have come before the speech).
    old_audio = [r for r in received[old_begin : start + at] if r.name == "audio"]
    rest = after[at + 1 :]
    new_tts = next((i for i, r in enumerate(rest) if r.name == "TTS_BEGIN"), len(rest))
    leaked = sum(1 for r in rest[:new_tts] if r.name == "audio")
    return Interruption(
        index, ms(onset), ms(cancel), ms(old_audio[-1]) if old_audio else None, leaked, done_first
    )


async def _run(
    url: str, key: str, count: int, per_call: int, speech: list[bytes], *, verbose: bool
) -> list[Interruption]:
    # A few interruptions per call: a long history makes the small model's answers short
    # (nothing left to interrupt), while the start of a call costs an extra answer.
    results: list[Interruption] = []
    while len(results) < count:
        n = min(per_call, count - len(results))
        results += await _run_call(url, key, n, speech, first=len(results), verbose=verbose)
    return results


async def _run_call(
    url: str, key: str, count: int, speech: list[bytes], *, first: int, verbose: bool
) -> list[Interruption]:
    call = await BellaCall.open(f"{url}/v1/audio/realtime", key)
    results: list[Interruption] = []
    try:
        started = await call.start(
            {
                "format": "pcm",
                "sample_rate": RATE,
                "enable_intermediate_result": True,
                "llm_option": {"main": {"temperature": 0.7, "sys_prompt": SYSTEM_PROMPT}},
                "tts_option": {"sample_rate": 24000},
            }
        )
        if started.name != "TranscriptionStarted":
            raise RuntimeError(f"call refused: {started.header}")
        await call.send_audio(speech[first % len(speech)] + silence(1.0), realtime=True)
        answer_at = 0  # where the answer to interrupt began
        for n in range(first, first + count):
            begin = await call.wait_for(
                lambda r: r.name == "TTS_BEGIN", after=answer_at, timeout_s=180
            )
            await call.wait_for(
                lambda r: r.name == "audio", after=call.received.index(begin), timeout_s=180
            )
            mark = len(call.received)
            pcm = speech[(n + 1) % len(speech)] + silence(1.0)
            voiced_at = await _speak(call, pcm, first_voiced_ms(pcm))
            # Let the new answer start before measuring (and interrupting) it.
            new = await call.wait_for(
                lambda r: r.name == "LLM_CHAT_BEGIN", after=mark, timeout_s=120
            )
            answer_at = call.received.index(new)
            old_begin = call.received.index(begin)
            result = _measure(call.received, old_begin, mark, voiced_at, n)
            results.append(result)
            if result.cancel_ms is None and verbose:
                base = call.received[old_begin].at
                trail = [
                    f"{r.at - base:.2f}:{r.name}"
                    for r in call.received[old_begin:]
                    if r.name != "audio" or r is call.received[old_begin + 1]
                ]
                print(f"[bargein] missed; events since the answer began: {trail}", flush=True)
            print(f"[bargein] {n + 1}: {asdict(result)}", flush=True)
    finally:
        await call.aclose()
    return results


def _summary(results: list[Interruption]) -> dict[str, object]:
    def stats(values: list[float | None]) -> dict[str, float]:
        v = [x for x in values if x is not None]
        return {"n": len(v), "p50_ms": _pct(v, 50), "p95_ms": _pct(v, 95)}

    done = [r for r in results if r.cancel_ms is not None]
    return {
        "interruptions": len(results),
        "missed": len(results) - len(done),
        "audio_after_cancel": sum(r.audio_after_cancel for r in done),
        "vad_onset": stats([r.vad_onset_ms for r in results]),
        "cancel": stats([r.cancel_ms for r in done]),
        "last_old_audio": stats([r.last_old_audio_ms for r in done]),
    }


async def _main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bargein-") as d:
        speech = [synthesize(q, Path(d)) for q in QUESTIONS]
    settings = {"min_speech_ms": args.min_speech_ms, "per_call": args.per_call}
    if args.url:
        results = await _run(
            args.url, args.api_key, args.interruptions, args.per_call, speech, verbose=args.verbose
        )
    else:
        options = StackOptions(
            data_dir=CommonSettings().data_dir,
            nats_port=free_port(),
            gateway_port=free_port(),
            api_keys=("bench-bargein",),
            extra_env={
                "GATEWAY_BARGE_IN_MIN_SPEECH_MS": str(args.min_speech_ms),
                # Answers long enough to be interrupted while still being made.
                "LLM_MAX_TOKENS_LIMIT": "160",
            },
        )
        async with running_stack(options, echo=lambda line: None) as stack:
            results = await _run(
                stack.gateway_url,
                stack.api_key,
                args.interruptions,
                args.per_call,
                speech,
                verbose=args.verbose,
            )
    return {
        "settings": settings,
        "summary": _summary(results),
        "interruptions": [asdict(r) for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interruptions", type=int, default=20)
    parser.add_argument("--per-call", type=int, default=2)
    parser.add_argument("--min-speech-ms", type=int, default=300)
    parser.add_argument("--url", default="", help="a running gateway, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--verbose", action="store_true", help="print the events of misses")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bargein.json"))
    args = parser.parse_args()
    report = asyncio.run(_main(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
