"""``python -m services.stack``: the command line behind ``./run up`` and ``./run call``.

up [--replicas asr=2,tts=2]     start NATS, every service and the gateway; Ctrl-C stops all
call FILE.wav [--out reply.wav] place a Bella call from a WAV file, print transcripts,
                                save the spoken reply
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import wave
from pathlib import Path

from services.stack.bella_client import BellaCall, Received
from services.stack.runner import running_stack
from services.stack.supervisor import ChildFailedError
from services.stack.topology import StackOptions, dev_api_key, parse_replicas
from shared.audio import resample_pcm16
from shared.settings import CommonSettings


def _options(args: argparse.Namespace) -> StackOptions:
    settings = CommonSettings()
    keys = tuple(k.strip() for k in os.environ.get("GATEWAY_API_KEYS", "").split(",") if k.strip())
    return StackOptions(
        data_dir=settings.data_dir,
        replicas=parse_replicas(args.replicas),
        nats_url=os.environ.get("NATS_URL") or None,
        nats_port=int(os.environ.get("VOICE_NATS_PORT", "14222")),
        gateway_host=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8080")),
        api_keys=keys,
    )


async def _up(args: argparse.Namespace) -> int:
    options = _options(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("[stack] starting (first start loads the models; progress follows)", file=sys.stderr)
    try:
        async with running_stack(options, echo=lambda line: print(line, file=sys.stderr)) as stack:
            print(
                "\n"
                f"  Voice pipeline ready.\n"
                f"  Bella realtime:  {stack.gateway_url}/v1/audio/realtime\n"
                f"  Bella ASR only:  {stack.gateway_url}/v1/audio/asr/stream\n"
                f"  API key:         {stack.api_key}   (header 'Authorization: Bearer <key>')\n"
                f"  NATS:            {stack.nats_url}\n"
                f"  Try a call:      ./run call some.wav --out reply.wav\n"
                f"  Ctrl-C stops everything.\n",
                flush=True,
            )
            await stop.wait()
            print("[stack] stopping", file=sys.stderr)
    except ChildFailedError as exc:
        print(f"[stack] failed to start: {exc}", file=sys.stderr)
        return 1
    print("[stack] stopped", file=sys.stderr)
    return 0


def _read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM WAV")
        pcm = w.readframes(w.getnframes())
        if w.getnchannels() == 2:
            import numpy as np

            stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
            pcm = stereo.mean(axis=1).astype("<i2").tobytes()
        return pcm, w.getframerate()


def _print_event(item: Received) -> None:
    p = item.payload
    if item.name == "TranscriptionResultChanged":
        print(f"  ... {p.get('result', '')}", file=sys.stderr)
    elif item.name == "SentenceEnd":
        print(f"you: {p.get('result', '')}")
    elif item.name == "LLM_CHAT_END":
        print(f"bot: {p.get('data', '')}")
    elif item.name == "TTS_TTFT":
        print(f"  (first audio {p.get('latency')} ms after you stopped)", file=sys.stderr)
    elif item.name in ("TaskFailed", "TranscriptionFailed", "LLM_CHAT_ERROR"):
        print(f"error: {item.name}: {item.header.get('status_message')}", file=sys.stderr)


async def _call(args: argparse.Namespace) -> int:
    pcm, rate = _read_wav(Path(args.wav))
    pcm = resample_pcm16(pcm, rate, 16000)
    host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
    port = os.environ.get("GATEWAY_PORT", "8080")
    url = args.url or f"ws://{host}:{port}/v1/audio/realtime"
    key = args.api_key or (
        os.environ.get("GATEWAY_API_KEYS", "").split(",")[0].strip()
        or dev_api_key(CommonSettings().data_dir)
    )
    call = await BellaCall.open(url, key, on_event=_print_event)
    try:
        started = await call.start(
            {
                "format": "pcm",
                "sample_rate": 16000,
                "enable_intermediate_result": True,
                "tts_option": {"sample_rate": 24000},
            }
        )
        if started.name != "TranscriptionStarted":
            print(f"call refused: {started.header.get('status_message')}", file=sys.stderr)
            return 1
        total_s = len(pcm) / 32000
        print(f"[call] streaming {total_s:.1f} s of audio at real-time pace", file=sys.stderr)
        await call.send_audio(pcm + bytes(32000))  # one second of silence ends the turn
        await call.stop(timeout_s=args.timeout)
    finally:
        await call.aclose()
    reply = call.audio()
    if args.out:
        with wave.open(args.out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(24000)
            w.writeframes(reply)
        print(
            f"[call] saved {len(reply) / 48000:.1f} s of reply audio to {args.out}", file=sys.stderr
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="run")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the whole stack")
    up.add_argument("--replicas", default="", help="e.g. asr=2,tts=2")
    call = sub.add_parser("call", help="place a call from a WAV file")
    call.add_argument("wav")
    call.add_argument("--out", default="")
    call.add_argument("--url", default="")
    call.add_argument("--api-key", default="")
    call.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.cmd == "up":
            return asyncio.run(_up(args))
        return asyncio.run(_call(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
