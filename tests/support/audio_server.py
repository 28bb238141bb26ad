"""An OpenAI-compatible audio server for tests, serving the embedded engines' weights.

``python -m tests.support.audio_server [--whisper DIR] [--piper]`` serves, on an
ephemeral loopback port with uvicorn:

* ``POST /v1/audio/transcriptions`` (``--whisper``): the ``faster-whisper-server``
  package (an OpenAI-compatible FastAPI app from PyPI) over a local CTranslate2
  Whisper directory;
* ``POST /v1/audio/speech`` (``--piper``): OpenAI's speech route in front of Piper
  (run as its own program, as the TTS service does): JSON ``{model, input, voice,
  response_format: pcm|wav, speed}``; ``pcm`` is raw PCM16 mono at 24 kHz, like
  OpenAI's, streamed in chunks; unknown voices and formats get a 400 error object.

It prints ``LISTENING <base_url>`` once the socket listens and serves until its
stdin closes, so it never outlives the test that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.tts.piper import PiperProcess
from services.tts.settings import TtsSettings
from shared.audio import resample_pcm16

PCM_RATE = 24000  # what OpenAI's "pcm" format is
VOICES = {"joe", "alloy"}  # both read by the one packaged English voice
CHUNK_BYTES = 4800  # 100 ms at 24 kHz


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error"}}, status_code=status
    )


def _wav(pcm: bytes, rate: int) -> bytes:
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm


def add_speech_route(app: FastAPI) -> PiperProcess:
    model, config = TtsSettings().piper_files()
    piper = PiperProcess(Path(sys.executable), model, config)
    lock = asyncio.Lock()  # one Piper program: one sentence at a time

    @app.post("/v1/audio/speech", response_model=None)
    async def speech(body: dict[str, Any]) -> Response:
        text = body.get("input")
        voice = body.get("voice")
        fmt = body.get("response_format", "mp3")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "input must be a non-empty string")
        if voice not in VOICES:
            return _error(400, f"unknown voice {voice!r}")
        if fmt not in ("pcm", "wav"):
            return _error(400, f"unsupported response_format {fmt!r}")
        async with lock:
            audio = await asyncio.to_thread(piper.synthesize, text, 30.0)
        if fmt == "wav":
            return Response(_wav(audio.pcm, audio.sample_rate), media_type="audio/wav")
        pcm = resample_pcm16(audio.pcm, audio.sample_rate, PCM_RATE)

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(pcm), CHUNK_BYTES):
                yield pcm[start : start + CHUNK_BYTES]

        return StreamingResponse(chunks(), media_type="audio/pcm")

    return piper


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--whisper", help="a CTranslate2 Whisper directory")
    parser.add_argument("--piper", action="store_true")
    args = parser.parse_args()
    app: FastAPI
    workdir = Path(tempfile.mkdtemp(prefix="audio-server-"))
    if args.whisper:
        from faster_whisper_server.api import app as whisper_app
        from faster_whisper_server.models import configure_models_from_config

        # Its multi-model YAML is the public way to pass model options: int8 as the
        # embedded engine runs it; "whisper-1" is the name requests default to.
        config = workdir / "models.yaml"
        config.write_text(
            "models:\n"
            f"  - name: whisper-1\n    path: {json.dumps(args.whisper)}\n"
            "    model_options: {compute_type: int8, cpu_threads: 1}\n"
            "    transcribe_options: {beam_size: 1, condition_on_previous_text: false}\n"
        )
        configure_models_from_config(str(config))
        app = whisper_app
    else:
        app = FastAPI()
    piper = add_speech_route(app) if args.piper else None
    if piper is not None:
        piper.start()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))

    def watch_stdin() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"LISTENING http://{host}:{port}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        if piper is not None:
            piper.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
