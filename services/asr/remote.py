"""Speech recognition by a remote OpenAI-compatible ``/v1/audio/transcriptions`` server.

Each endpointed utterance (the same audio the embedded Whisper would decode for a
final) is sent as one multipart WAV upload; the JSON answer's ``text`` becomes the
`TranscriptFinal`. Remote sessions publish no partial transcripts: a request per
partial would multiply the cost and most servers are not streaming anyway. The
speculative final decode at the start of a pause still runs, so a remote final is
usually in flight before the silence window closes.

The call blocks: it runs on the route's own decode pool threads (``concurrency``), never
on the event loop. Retries follow `shared.remote` (connection failures, 408, 429, 5xx).
"""

from __future__ import annotations

import io
import logging
import time
import wave
from typing import Any

import httpx
import numpy as np

from services.asr.audiobuffer import SAMPLE_RATE, Samples
from services.asr.decoder import DecodeOptions, DecodeResult, has_words
from shared.audio import float_to_pcm16
from shared.errors import EngineError
from shared.remote import RemoteError, RemoteMetrics, RetryPolicy, client_options, send_sync
from shared.routing import TranscriptionRoute

log = logging.getLogger(__name__)


def wav_bytes(audio: Samples, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Float samples -> a PCM16 mono WAV file in memory."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float_to_pcm16(audio.astype(np.float32, copy=False)))
    return out.getvalue()


def parse_transcription(payload: Any) -> tuple[str, str | None, float | None]:
    """``(text, language, mean segment log-probability)`` from a ``json`` or
    ``verbose_json`` answer; raises `EngineError` for anything else."""
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise EngineError("transcription answer has no text")
    language = payload.get("language")
    segments = payload.get("segments")
    logprobs = [
        float(s["avg_logprob"])
        for s in segments or ()
        if isinstance(s, dict) and isinstance(s.get("avg_logprob"), int | float)
    ]
    mean = sum(logprobs) / len(logprobs) if logprobs else None
    return payload["text"].strip(), language if isinstance(language, str) else None, mean


class RemoteTranscriber:
    """`services.asr.transcriber.Transcriber` over HTTP; safe from several threads."""

    def __init__(
        self,
        name: str,
        route: TranscriptionRoute,
        metrics: RemoteMetrics,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.route = route
        self._metrics = metrics
        self._policy = RetryPolicy.of(route)
        self._client = httpx.Client(
            **client_options(route, api_key=route.api_key()), transport=transport
        )
        # The session waits this long for a final before it falls back to the last
        # partial (of which remote sessions have none): one full request with its retries.
        per_try = route.connect_timeout_s + route.read_timeout_s
        self._options = DecodeOptions(
            guard_base_s=per_try * (route.max_retries + 1), guard_per_audio_s=0.0
        )

    @property
    def options(self) -> DecodeOptions:
        return self._options

    def transcribe(
        self,
        audio: Samples,
        language: str | None,
        *,
        max_new_tokens: int | None = None,
        min_context_s: float | None = None,
    ) -> DecodeResult:
        """One utterance; blocks; raises `EngineError` (`RemoteError` for HTTP failures)."""
        started = time.monotonic()
        audio_s = len(audio) / SAMPLE_RATE
        fields: dict[str, str] = {"model": self.route.model, "response_format": "json"}
        fields |= {k: str(v) for k, v in self.route.extra_body.items()}
        lang = self.route.language or language
        if lang:
            fields["language"] = lang
        if self.route.prompt:
            fields["prompt"] = self.route.prompt
        files = {"file": ("utterance.wav", wav_bytes(audio), "audio/wav")}
        what = f"transcription model {self.name}"
        try:
            response = send_sync(
                self._client,
                lambda: self._client.build_request(
                    "POST", "audio/transcriptions", data=fields, files=files
                ),
                self._policy,
                what=what,
                on_retry=self._metrics.retry_counter(self.name),
            )
            try:
                text, detected, logprob = parse_transcription(response.json())
            except ValueError as exc:  # not JSON
                raise EngineError(f"{what}: answer is not JSON") from exc
        except RemoteError as exc:
            self._metrics.request_done(self.name, f"http_{exc.status}" if exc.status else "error")
            raise
        except EngineError:
            self._metrics.request_done(self.name, "bad_answer")
            raise
        self._metrics.request_done(self.name, "ok")
        return DecodeResult(
            text=text if has_words(text) else "",
            language=detected or lang or "",
            # Only a language the server reported (or we asked for) may lock the session's.
            language_probability=1.0 if detected or lang else 0.0,
            no_speech_prob=0.0,
            avg_logprob=logprob if logprob is not None else 0.0,
            audio_s=audio_s,
            elapsed_s=time.monotonic() - started,
        )

    def close(self) -> None:
        self._client.close()
