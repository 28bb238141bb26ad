"""Error paths of the remote transcription and speech clients, on `httpx.MockTransport`."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator, Callable

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.asr.remote import RemoteTranscriber
from services.tts.remote import RemoteSpeech
from shared.errors import EngineError
from shared.remote import RemoteError, RemoteMetrics
from shared.routing import SpeechRoute, TranscriptionRoute

HTTP = {"backend": "openai", "base_url": "http://remote.test/v1", "retry_backoff_s": 0.0}
ASR = TranscriptionRoute.model_validate(HTTP | {"model": "whisper-1"})
TTS = SpeechRoute.model_validate(HTTP | {"model": "tts-1", "default_voice": "alloy"})
AUDIO = np.zeros(16000, dtype=np.float32)  # 1 s


class Script:
    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        request.read()
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def transcriber(script: Script) -> tuple[RemoteTranscriber, RemoteMetrics]:
    metrics = RemoteMetrics("asr", CollectorRegistry())
    return RemoteTranscriber("w", ASR, metrics, transport=httpx.MockTransport(script)), metrics


def test_transcription_upload_and_answer() -> None:
    script = Script(httpx.Response(200, json={"text": " Hello there. ", "language": "en"}))
    remote, metrics = transcriber(script)
    result = remote.transcribe(AUDIO, "en")
    assert (result.text, result.language, result.audio_s) == ("Hello there.", "en", 1.0)
    body = script.requests[0].content
    assert b'name="model"\r\n\r\nwhisper-1' in body and b'name="language"\r\n\r\nen' in body
    upload = body[body.index(b"RIFF") :]
    with wave.open(io.BytesIO(upload)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    assert metrics.requests.labels("asr", "w", "ok")._value.get() == 1


def test_transcription_429_then_success() -> None:
    script = Script(
        httpx.Response(429, headers={"retry-after": "0"}), httpx.Response(200, json={"text": "ok"})
    )
    remote, metrics = transcriber(script)
    assert remote.transcribe(AUDIO, None).text == "ok"
    assert metrics.retries.labels("asr", "w", "429")._value.get() == 1


@pytest.mark.parametrize(
    ("step", "error", "attempts"),
    [
        (httpx.Response(400, json={"error": {"message": "bad file"}}), "HTTP 400", 1),
        (httpx.Response(502), "HTTP 502", 3),
        (httpx.Response(200, text="<html>"), "not JSON", 1),
        (httpx.Response(200, json={"segments": []}), "no text", 1),
        (httpx.ReadTimeout("slow"), "timed out", 1),
    ],
)
def test_transcription_failures(
    step: httpx.Response | Exception, error: str, attempts: int
) -> None:
    script = Script(step)
    remote, _ = transcriber(script)
    with pytest.raises(EngineError, match=error):
        remote.transcribe(AUDIO, None)
    assert len(script.requests) == attempts


class BrokenStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"\x01\x00" * 100
        raise httpx.ReadError("connection reset")


async def speak(
    *steps: httpx.Response | Exception, route: SpeechRoute = TTS
) -> tuple[Callable[[], int], bytes, int]:
    script = Script(*steps)
    metrics = RemoteMetrics("tts", CollectorRegistry())
    remote = RemoteSpeech("s", route, metrics, transport=httpx.MockTransport(script))
    try:
        audio = await remote.synthesize("Hello.", "alloy")
    finally:
        await remote.aclose()
    return (lambda: len(script.requests)), audio.pcm, audio.sample_rate


async def test_speech_500_then_success() -> None:
    count, pcm, rate = await speak(httpx.Response(500), httpx.Response(200, content=b"\0\1" * 240))
    assert count() == 2 and len(pcm) == 480 and rate == 24000


async def test_speech_odd_byte_count_drops_the_half_sample() -> None:
    _, pcm, _ = await speak(httpx.Response(200, content=b"\0\1" * 10 + b"\7"))
    assert len(pcm) == 20


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (httpx.Response(200, content=b"RIFF....WAVEfmt "), "got a WAV file"),
        (httpx.Response(200, content=b""), "empty audio"),
        (httpx.Response(200, stream=BrokenStream()), "stream broke"),
        (httpx.Response(404, json={"error": {"message": "no such voice"}}), "HTTP 404"),
    ],
)
async def test_speech_failures(step: httpx.Response, error: str) -> None:
    with pytest.raises(EngineError, match=error):
        await speak(step)


async def test_speech_connect_failures_are_retried_then_reported() -> None:
    with pytest.raises(RemoteError, match="ConnectError") as caught:
        await speak(httpx.ConnectError("refused"))
    assert caught.value.retryable and caught.value.status is None
