"""The JSON events of the Volcengine live-voice-call protocol, as pydantic models.

Full requests and responses carry ``{"event": name, "payload": {...}}``. Client events
tolerate unknown extra fields (the reference frontend may send more than we act on) but
types are strict; server events are exactly what the reference documents.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from services.gateway.volcengine.codec import VolcengineError

BOT_UPDATE_CONFIG = "BotUpdateConfig"

# A voice name as TTS knows it ("zh_female", "en_US-joe-medium", a provider's voice id).
Speaker = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class _ClientModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class _ServerModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- client


class BotUpdateConfigPayload(_ClientModel):
    """The session's settings for the next turn; ``None`` leaves a setting as it is."""

    speaker: Speaker | None = None


class BotUpdateConfig(_ClientModel):
    event: Literal["BotUpdateConfig"]
    payload: BotUpdateConfigPayload = BotUpdateConfigPayload()


ClientEvent = BotUpdateConfig


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "event"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def parse_event(payload: bytes) -> ClientEvent:
    """One full client request's JSON payload -> its event; `VolcengineError` if bad."""
    try:
        raw = json.loads(payload.decode("utf-8"))
    # ValueError covers JSONDecodeError, UnicodeDecodeError and CPython's int-digit limit.
    except (ValueError, RecursionError) as exc:
        raise VolcengineError(
            f"payload is not JSON: {exc.__class__.__name__}", kind="malformed_json"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
        raise VolcengineError(
            'expected a JSON object {"event": ..., "payload": {...}}', kind="bad_envelope"
        )
    name = raw["event"]
    if name != BOT_UPDATE_CONFIG:
        raise VolcengineError(
            f"unknown event {name[:64]!r}: the client sends {BOT_UPDATE_CONFIG} "
            "(audio goes in audio-only frames)",
            kind="unknown_event",
        )
    body: dict[str, Any] = dict(raw)
    if body.get("payload") is None:
        body.pop("payload", None)
    try:
        return BotUpdateConfig.model_validate(body)
    except ValidationError as exc:
        raise VolcengineError(
            f"invalid {name}: {_first_error(exc)}", kind="invalid_payload"
        ) from exc


# --------------------------------------------------------------------------- server


class BotReadyPayload(_ServerModel):
    session: str


class SentencePayload(_ServerModel):
    sentence: str


class EmptyPayload(_ServerModel):
    pass


class ErrorBody(_ServerModel):
    code: str
    message: str


class BotErrorPayload(_ServerModel):
    error: ErrorBody


class BotReady(_ServerModel):
    event: Literal["BotReady"] = "BotReady"
    payload: BotReadyPayload


class SentenceRecognized(_ServerModel):
    event: Literal["SentenceRecognized"] = "SentenceRecognized"
    payload: SentencePayload


class TTSSentenceStart(_ServerModel):
    event: Literal["TTSSentenceStart"] = "TTSSentenceStart"
    payload: SentencePayload


class TTSDone(_ServerModel):
    event: Literal["TTSDone"] = "TTSDone"
    payload: EmptyPayload = Field(default_factory=EmptyPayload)


class BotError(_ServerModel):
    event: Literal["BotError"] = "BotError"
    payload: BotErrorPayload


ServerEvent = BotReady | SentenceRecognized | TTSSentenceStart | TTSDone | BotError


def bot_error(code: str, message: str) -> BotError:
    return BotError(payload=BotErrorPayload(error=ErrorBody(code=code, message=message)))


def dump(event: ServerEvent) -> bytes:
    """The JSON payload of a server event."""
    return json.dumps(event.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
