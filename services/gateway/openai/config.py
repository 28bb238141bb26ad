"""A session's settings: defaults, client updates (GA and beta shapes), and views of them.

`SessionConfig` is immutable; `apply_ga` / `apply_beta` return the updated settings or
raise `RealtimeError`. `call_options` is what the call is opened with; `ga_json` /
`beta_json` are the ``session`` objects of ``session.created`` / ``session.updated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from services.gateway.call import CallOptions
from services.gateway.openai.audio import AudioFormat
from services.gateway.openai.codec import ErrorCode, RealtimeError
from services.gateway.openai.messages import BetaSession, GaSession, TurnDetection
from shared.messages import VadOptions

MAX_TOKENS = 4096  # the LLM's limit per answer (LlmOpen.max_tokens)
SessionKind = Literal["realtime", "transcription"]
Modality = Literal["audio", "text"]

# OpenAI's built-in voice names: our TTS has other voices, so these mean "automatic"
# (chosen by the language of the text) rather than an error the SDK's examples would hit.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
# OpenAI's model names (the SDK always sends one in ``?model=``): they mean the
# deployment's default engines. Any other name is looked up in the routing table.
OPENAI_LLM_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")
OPENAI_ASR_NAMES = frozenset(
    {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize"}
)
# semantic_vad is served by the server VAD; its eagerness picks the silence that ends a turn.
EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}


@dataclass(frozen=True)
class TurnSettings:
    """Server VAD; ``None`` in `SessionConfig.turn` is manual mode (the client commits)."""

    kind: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad: VadOptions = field(default_factory=VadOptions)
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str | None = None


@dataclass(frozen=True)
class SessionConfig:
    kind: SessionKind = "realtime"
    model: str | None = None
    instructions: str = ""
    modality: Modality = "audio"
    voice: str | None = None
    speed: float = 1.0
    input_format: AudioFormat = AudioFormat.PCM16
    output_format: AudioFormat = AudioFormat.PCM16
    turn: TurnSettings | None = field(default_factory=TurnSettings)
    transcription_model: str | None = None
    language: str | None = None
    temperature: float = 0.8
    max_output_tokens: int | None = None  # None: "inf"

    @property
    def answers(self) -> bool:
        return self.kind == "realtime"

    @property
    def tts_voice(self) -> str | None:
        """The voice asked of our TTS (OpenAI's own names: automatic)."""
        if self.voice is None or self.voice.lower() in OPENAI_VOICES:
            return None
        return self.voice

    @property
    def llm_max_tokens(self) -> int:
        """The answer's token cap; "inf" is the LLM's own maximum."""
        return self.max_output_tokens or MAX_TOKENS

    @property
    def llm_model(self) -> str | None:
        """The model asked of our LLM (OpenAI's realtime model names: the default)."""
        if self.model is None or self.model.startswith(OPENAI_LLM_PREFIXES):
            return None
        return self.model

    @property
    def asr_model(self) -> str | None:
        """The model asked of our ASR (OpenAI's transcription model names: the default)."""
        name = self.transcription_model
        if name is None or name in OPENAI_ASR_NAMES or name.startswith(OPENAI_LLM_PREFIXES):
            return None
        return name

    def call_options(self, sid: str) -> CallOptions:
        turn = self.turn
        return CallOptions(
            sid=sid,
            answer=self.answers,
            client_rate=self.input_format.rate,
            vad=turn.vad if turn else VadOptions(),
            manual=turn is None,
            # Manual turns are answered on response.create only, as OpenAI does.
            auto_respond=turn.create_response if turn else False,
            interrupt=turn.interrupt_response if turn else False,
            max_tokens=self.llm_max_tokens,
            language=self.language,
            asr_model=self.asr_model,
            llm_model=self.llm_model,
            system_prompt=self.instructions,
            temperature=self.temperature,
            voice=self.tts_voice,
            tts_rate=self.output_format.rate,
        )

    # ------------------------------------------------------------------ views

    def _turn_json(self) -> dict[str, Any] | None:
        t = self.turn
        if t is None:
            return None
        out: dict[str, Any] = {
            "type": t.kind,
            "create_response": t.create_response,
            "interrupt_response": t.interrupt_response,
        }
        if t.kind == "semantic_vad":
            out["eagerness"] = t.eagerness or "auto"
        else:
            out["threshold"] = t.vad.threshold
            out["prefix_padding_ms"] = t.vad.prefix_padding_ms
            out["silence_duration_ms"] = t.vad.silence_duration_ms
        return out

    def _transcription_json(self) -> dict[str, Any]:
        return {"model": self.transcription_model, "language": self.language}

    def ga_json(self, session_id: str) -> dict[str, Any]:
        audio_input: dict[str, Any] = {
            "format": self.input_format.ga_json(),
            "transcription": self._transcription_json(),
            "turn_detection": self._turn_json(),
        }
        if self.kind == "transcription":
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": {"input": audio_input},
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": [self.modality],
            "instructions": self.instructions,
            "audio": {
                "input": audio_input,
                "output": {
                    "format": self.output_format.ga_json(),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "max_output_tokens": self.max_output_tokens or "inf",
        }

    def beta_json(self, session_id: str) -> dict[str, Any]:
        # The beta schema lists OpenAI's model names only: another name is not echoed.
        openai_model = self.model is not None and self.model.startswith(OPENAI_LLM_PREFIXES)
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": self.model if openai_model else None,
            "modalities": ["text"] if self.modality == "text" else ["audio", "text"],
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": self.input_format.beta_name,
            "output_audio_format": self.output_format.beta_name,
            "input_audio_transcription": self._transcription_json(),
            "turn_detection": self._turn_json(),
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_output_tokens or "inf",
            "speed": self.speed,
        }


# --------------------------------------------------------------------------- updates


def _turn(current: TurnSettings | None, spec: TurnDetection) -> TurnSettings:
    base = current if current is not None and current.kind == spec.type else TurnSettings()
    vad = base.vad
    fields: dict[str, Any] = {}
    if spec.threshold is not None:
        fields["threshold"] = spec.threshold
    if spec.prefix_padding_ms is not None:
        fields["prefix_padding_ms"] = spec.prefix_padding_ms
    if spec.silence_duration_ms is not None:
        fields["silence_duration_ms"] = spec.silence_duration_ms
    elif spec.type == "semantic_vad":
        fields["silence_duration_ms"] = EAGERNESS_SILENCE_MS[spec.eagerness or "auto"]
    if fields:
        vad = vad.model_copy(update=fields)
    return TurnSettings(
        kind=spec.type,
        vad=vad,
        create_response=base.create_response
        if spec.create_response is None
        else spec.create_response,
        interrupt_response=base.interrupt_response
        if spec.interrupt_response is None
        else spec.interrupt_response,
        eagerness=spec.eagerness if spec.type == "semantic_vad" else None,
    )


def _refuse_tools(tools: list[dict[str, Any]] | None, event_id: str | None) -> None:
    if tools:
        raise RealtimeError(
            "tools (function calling) are not supported by this server",
            code=ErrorCode.UNSUPPORTED,
            param="session.tools",
            event_id=event_id,
        )


def _tokens(value: int | Literal["inf"]) -> int | None:
    return None if value == "inf" else value


def apply_ga(config: SessionConfig, s: GaSession, event_id: str | None) -> SessionConfig:
    """``config`` with a GA ``session.update`` applied (fields absent: unchanged)."""
    _refuse_tools(s.tools, event_id)
    new: dict[str, Any] = {}
    if s.type is not None:
        new["kind"] = s.type
    if s.model is not None:
        new["model"] = s.model
    if s.instructions is not None:
        new["instructions"] = s.instructions
    if s.output_modalities is not None:
        new["modality"] = s.output_modalities[0]
    if s.max_output_tokens is not None:
        new["max_output_tokens"] = _tokens(s.max_output_tokens)
    if s.temperature is not None:
        new["temperature"] = s.temperature
    audio_in = s.audio.input if s.audio else None
    audio_out = s.audio.output if s.audio else None
    if audio_in is not None:
        if audio_in.format is not None:
            fmt = AudioFormat.from_ga(audio_in.format.type)
            rate = audio_in.format.rate
            if rate is not None and rate != fmt.rate:
                raise RealtimeError(
                    f"{fmt.ga_name} is only supported at {fmt.rate} Hz, not {rate}",
                    code=ErrorCode.INVALID_VALUE,
                    param="session.audio.input.format.rate",
                    event_id=event_id,
                )
            new["input_format"] = fmt
        if "transcription" in audio_in.model_fields_set and audio_in.transcription is not None:
            new["transcription_model"] = audio_in.transcription.model
            new["language"] = audio_in.transcription.language
        if "turn_detection" in audio_in.model_fields_set:
            td = audio_in.turn_detection
            new["turn"] = None if td is None else _turn(config.turn, td)
    if audio_out is not None:
        if audio_out.format is not None:
            fmt = AudioFormat.from_ga(audio_out.format.type)
            rate = audio_out.format.rate
            if rate is not None and rate != fmt.rate:
                raise RealtimeError(
                    f"{fmt.ga_name} is only supported at {fmt.rate} Hz, not {rate}",
                    code=ErrorCode.INVALID_VALUE,
                    param="session.audio.output.format.rate",
                    event_id=event_id,
                )
            new["output_format"] = fmt
        if audio_out.voice is not None:
            voice = audio_out.voice
            new["voice"] = voice if isinstance(voice, str) else voice.id
        if audio_out.speed is not None:
            new["speed"] = audio_out.speed
    return replace(config, **new)


def apply_beta(
    config: SessionConfig,
    s: BetaSession,
    event_id: str | None,
    *,
    kind: SessionKind | None = None,
) -> SessionConfig:
    """``config`` with a beta-shaped session applied (``kind`` forces the session type)."""
    _refuse_tools(s.tools, event_id)
    new: dict[str, Any] = {}
    if kind is not None:
        new["kind"] = kind
    if s.model is not None:
        new["model"] = s.model
    if s.instructions is not None:
        new["instructions"] = s.instructions
    if s.modalities is not None:
        new["modality"] = "audio" if "audio" in s.modalities else "text"
    if s.voice is not None:
        new["voice"] = s.voice
    if s.input_audio_format is not None:
        new["input_format"] = AudioFormat.from_beta(s.input_audio_format)
    if s.output_audio_format is not None:
        new["output_format"] = AudioFormat.from_beta(s.output_audio_format)
    if s.input_audio_transcription is not None:
        new["transcription_model"] = s.input_audio_transcription.model
        new["language"] = s.input_audio_transcription.language
    if s.language is not None:
        new["language"] = s.language
    if "turn_detection" in s.model_fields_set:
        td = s.turn_detection
        new["turn"] = None if td is None else _turn(config.turn, td)
    if s.temperature is not None:
        new["temperature"] = s.temperature
    if s.max_response_output_tokens is not None:
        new["max_output_tokens"] = _tokens(s.max_response_output_tokens)
    if s.speed is not None:
        new["speed"] = s.speed
    return replace(config, **new)


# Settings the running call was opened with: they cannot change afterwards.
LOCKED = (
    ("kind", "session.type"),
    ("input_format", "session.audio.input.format"),
    ("output_format", "session.audio.output.format"),
    ("turn", "session.audio.input.turn_detection"),
    ("transcription_model", "session.audio.input.transcription.model"),
    ("language", "session.audio.input.transcription.language"),
    ("model", "session.model"),
)


def check_locked(old: SessionConfig, new: SessionConfig, event_id: str | None) -> None:
    """Refuse changing, mid-call, a setting the call was opened with."""
    for name, param in LOCKED:
        if getattr(old, name) != getattr(new, name):
            raise RealtimeError(
                f"{param} cannot change once audio or a response started the call; "
                "set it in the first session.update",
                code=ErrorCode.SESSION_LOCKED,
                param=param,
                event_id=event_id,
            )
