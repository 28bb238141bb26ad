"""Speech from a remote OpenAI-compatible ``/v1/audio/speech`` server.

One request per text segment (the segmenter keeps the first one short, so the first
audio comes early); the answer is read as it streams, in ``pcm`` (raw PCM16 mono at
the route's ``sample_rate``; OpenAI's is 24 kHz) or ``wav``. The segment's audio is
returned whole: `services.tts.turn` resamples it to the session's rate and publishes
it in ``TtsAudio`` chunks, exactly like the embedded engines' audio.

Voices are the routing table's: a session's voice name maps to the provider's voice
(`shared.routing.SpeechRoute.provider_voice`); the embedded voice list plays no part.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from services.tts.framing import WavAudio, parse_wav
from shared.errors import EngineError
from shared.remote import RemoteError, RemoteMetrics, RetryPolicy, client_options, send_async
from shared.routing import SpeechRoute

log = logging.getLogger(__name__)

# Bound on one segment's audio: a segment is at most a few hundred characters, well
# under a minute of speech (2.9 MB at 24 kHz); anything far beyond is a broken server.
MAX_SEGMENT_BYTES = 16 * 1024 * 1024


def speech_body(text: str, voice: str, route: SpeechRoute) -> dict[str, Any]:
    """The provider's request body for one segment (pure)."""
    body: dict[str, Any] = {
        "model": route.model,
        "input": text,
        "voice": voice,
        "response_format": route.response_format,
    }
    if route.speed is not None:
        body["speed"] = route.speed
    body.update(route.extra_body)
    return body


def decode_audio(data: bytes, route: SpeechRoute) -> WavAudio:
    """The answer's bytes -> PCM16 mono; raises `EngineError` if they are not audio."""
    if route.response_format == "wav":
        return parse_wav(data)
    if data[:4] == b"RIFF":
        raise EngineError("asked for raw pcm, got a WAV file: set response_format = 'wav'")
    # A half sample at the end (a cut stream) is dropped.
    return WavAudio(pcm=data[: len(data) - len(data) % 2], sample_rate=route.sample_rate)


class RemoteSpeech:
    """One routing-table speech model on a remote server; shared by every session."""

    def __init__(
        self,
        name: str,
        route: SpeechRoute,
        metrics: RemoteMetrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.route = route
        self._metrics = metrics
        self._policy = RetryPolicy.of(route)
        self._client = httpx.AsyncClient(
            **client_options(route, api_key=route.api_key()), transport=transport
        )

    async def synthesize(self, text: str, voice: str) -> WavAudio:
        """Speak ``text`` with the provider's ``voice``; raises `EngineError`.

        Cancelling is safe: the HTTP stream is closed.
        """
        body = speech_body(text, voice, self.route)
        what = f"speech model {self.name}"
        result = "cancelled"
        try:
            response = await send_async(
                self._client,
                lambda: self._client.build_request("POST", "audio/speech", json=body),
                self._policy,
                what=what,
                on_retry=self._metrics.retry_counter(self.name),
            )
            try:
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_SEGMENT_BYTES:
                        raise EngineError(f"{what}: more than {MAX_SEGMENT_BYTES} bytes of audio")
            finally:
                await response.aclose()
            audio = decode_audio(bytes(data), self.route)
            if not audio.pcm:
                raise EngineError(f"{what}: empty audio")
            result = "ok"
            return audio
        except RemoteError as exc:
            result = f"http_{exc.status}" if exc.status else "unreachable"
            raise
        except EngineError:
            result = "bad_answer"
            raise
        except httpx.TimeoutException as exc:
            result = "timeout"
            raise EngineError(f"{what}: audio stream stalled") from exc
        except httpx.HTTPError as exc:
            result = "broken_stream"
            raise EngineError(f"{what}: audio stream broke ({type(exc).__name__})") from exc
        finally:
            self._metrics.request_done(self.name, result)

    async def aclose(self) -> None:
        await self._client.aclose()
