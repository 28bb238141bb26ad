"""A Coze session's settings: what ``chat.update`` asked for, checked and merged.

Until the call is placed, every ``chat.update`` replaces the settings it names. Once
the call runs, the voice and the event subscriptions still change; changing the audio
formats, the turn detection or the conversation is refused (``INVALID_STATE``), because
the call's ASR, TTS and turn-taking were opened with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from services.gateway.call import CallOptions
from services.gateway.conversation import ConversationDefaults
from services.gateway.coze.audio import InputFormat, OutputFormat
from services.gateway.coze.codec import CozeError, CozeErrorCode
from services.gateway.coze.messages import SERVER_EVENTS, ChatUpdateData
from services.gateway.personas import Persona
from shared.messages import VadOptions

_VARIABLES = TypeAdapter(dict[str, JsonValue])
# A conversation id we accept as the session id (resume): uuids, Coze's numeric ids.
# What the session store accepts as a key (shared.state): a conversation is resumable.
_CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Coze's server_vad default prefix padding (SPEC's is 300 ms; the client's value wins).
COZE_PREFIX_PADDING_MS = 600


@dataclass(frozen=True)
class SessionConfig:
    input: InputFormat = field(default_factory=lambda: InputFormat.from_config(None))
    output: OutputFormat = field(default_factory=lambda: OutputFormat.from_config(None))
    server_vad: bool = False  # Coze's default is client_interrupt (the client completes)
    vad: VadOptions = field(
        default_factory=lambda: VadOptions(prefix_padding_ms=COZE_PREFIX_PADDING_MS)
    )
    voice: str | None = None
    speech_rate: int = 0
    conversation_id: str | None = None
    user_id: str | None = None
    variables: Mapping[str, JsonValue] = field(default_factory=dict)
    subscriptions: frozenset[str] | None = None  # None: every event

    def wants(self, event_type: str) -> bool:
        return self.subscriptions is None or event_type in self.subscriptions

    def locked_part(self) -> tuple[object, ...]:
        """What the call was opened with and cannot change."""
        return (self.input, self.output, self.server_vad, self.vad, self.conversation_id)

    def to_json(self) -> dict[str, JsonValue]:
        """The effective settings, as ``chat.updated`` reports them."""
        i, o = self.input, self.output
        output: dict[str, JsonValue] = {
            "codec": o.codec,
            "speech_rate": self.speech_rate,
            "voice_id": self.voice,
        }
        if o.codec == "pcm":
            output["pcm_config"] = {"sample_rate": o.rate}
        turn: dict[str, JsonValue] = {
            "type": "server_vad" if self.server_vad else "client_interrupt"
        }
        if self.server_vad:
            turn["prefix_padding_ms"] = self.vad.prefix_padding_ms
            turn["silence_duration_ms"] = self.vad.silence_duration_ms
        subscriptions: list[JsonValue] | None = None
        if self.subscriptions is not None:
            subscriptions = [*sorted(self.subscriptions)]
        return {
            "chat_config": {
                "conversation_id": self.conversation_id,
                "user_id": self.user_id,
                "parameters": dict(self.variables),
            },
            "input_audio": {
                "format": "wav" if i.wav else "pcm",
                "codec": i.codec,
                "sample_rate": i.rate,
                "channel": i.channels,
                "bit_depth": 16 if i.codec == "pcm" else 8,
            },
            "output_audio": output,
            "turn_detection": turn,
            "event_subscriptions": subscriptions,
        }

    def call_options(
        self, sid: str, persona: Persona | None, defaults: ConversationDefaults
    ) -> CallOptions:
        return CallOptions(
            sid=sid,
            client_rate=self.input.rate,
            partials=True,  # conversation.audio_transcript.update
            vad=self.vad,
            manual=not self.server_vad,
            system_prompt=persona.system_prompt if persona else "",
            variables=self.variables,
            voice=self.voice or (persona.voice if persona else None),
            max_history=defaults.max_history,
            tts_rate=self.output.rate,
        )


def _variables(*maps: dict[str, Any]) -> dict[str, JsonValue]:
    merged: dict[str, Any] = {}
    for m in maps:
        merged.update(m)
    try:
        return _VARIABLES.validate_python(merged)
    except ValidationError as exc:
        raise CozeError(
            f"chat_config variables: {exc.errors()[0]['msg']}", kind="bad_variables"
        ) from exc


def apply_update(config: SessionConfig, data: ChatUpdateData) -> SessionConfig:
    """``config`` with what ``data`` names replaced; `CozeError` if a value is not allowed."""
    out = config
    if data.input_audio is not None:
        out = replace(out, input=InputFormat.from_config(data.input_audio))
    if data.output_audio is not None:
        oa = data.output_audio
        out = replace(
            out,
            output=OutputFormat.from_config(oa),
            voice=oa.voice_id if oa.voice_id else out.voice,
            speech_rate=oa.speech_rate,
        )
    if data.turn_detection is not None:
        td = data.turn_detection
        if td.type == "semantic_vad":
            raise CozeError(
                "turn_detection.type 'semantic_vad' is not supported: use server_vad or "
                "client_interrupt",
                kind="unsupported_turn_detection",
                code=CozeErrorCode.UNSUPPORTED,
            )
        vad = VadOptions(
            prefix_padding_ms=td.prefix_padding_ms
            if td.prefix_padding_ms is not None
            else COZE_PREFIX_PADDING_MS,
            silence_duration_ms=td.silence_duration_ms
            if td.silence_duration_ms is not None
            else VadOptions().silence_duration_ms,
        )
        out = replace(out, server_vad=td.type == "server_vad", vad=vad)
    if data.chat_config is not None:
        cc = data.chat_config
        if cc.conversation_id and not _CONVERSATION_ID.fullmatch(cc.conversation_id):
            raise CozeError(
                "chat_config.conversation_id must be 1-128 letters, digits, '_' or '-'",
                kind="bad_conversation_id",
            )
        out = replace(
            out,
            conversation_id=cc.conversation_id or out.conversation_id,
            user_id=cc.user_id or out.user_id,
            variables=_variables(cc.custom_variables, cc.parameters),
        )
    if data.event_subscriptions is not None:
        unknown = sorted(set(data.event_subscriptions) - SERVER_EVENTS)
        if unknown:
            raise CozeError(
                f"event_subscriptions names unknown events: {', '.join(unknown)[:200]}",
                kind="bad_subscriptions",
            )
        # An empty list subscribes to everything, as in Coze.
        subs = frozenset(data.event_subscriptions) or None
        out = replace(out, subscriptions=subs)
    return out
