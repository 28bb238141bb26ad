"""Sans-I/O Bella codec: text frames -> typed commands, events -> text frames.

Nothing here touches a socket. `parse_text` raises `BellaError` for anything a client
must be told about with `TaskFailed`; the connection stays usable afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from pydantic import ValidationError

from services.gateway.bella.messages import (
    NAMESPACE,
    PING,
    ClientCommand,
    Header,
    StartTranscription,
    StopTranscription,
)
from shared.errors import ProtocolError

VAD_FRAME_MS = 32  # the VAD judges 32 ms windows (512 samples at 16 kHz)
SUCCESS_MESSAGE = "GATEWAY|SUCCESS|Success."
START = "StartTranscription"
STOP = "StopTranscription"


class Status(IntEnum):
    SUCCESS = 20000000
    CLIENT_ERROR = 40000000
    SERVER_ERROR = 50000000


class BellaError(ProtocolError):
    """A client frame the protocol does not allow; ``kind`` is a fixed metric label."""

    def __init__(
        self, message: str, *, kind: str, task_id: str = "", status: Status = Status.CLIENT_ERROR
    ) -> None:
        super().__init__(message, code=kind)
        self.kind = kind
        self.task_id = task_id
        self.status = status


# --------------------------------------------------------------------------- conversions


def ms_to_frame(ms: float) -> int:
    """Index of the 32 ms VAD window holding stream time ``ms``."""
    return int(ms // VAD_FRAME_MS)


def frame_to_ms(frame: int) -> int:
    """Stream time at which VAD window ``frame`` starts."""
    return frame * VAD_FRAME_MS


# --------------------------------------------------------------------------- parsing


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "message"
    msg = str(err["msg"])
    # pydantic prefixes our own validator messages; the client needs only the reason.
    msg = msg.removeprefix("Value error, ")
    return f"{where}: {msg}"


def parse_text(text: str) -> ClientCommand:
    """Parse one client text frame."""
    if text.strip() == "ping":
        return PING
    try:
        raw = json.loads(text)
    # ValueError, not only JSONDecodeError: an integer literal over 4300 digits raises a
    # plain ValueError (CPython's int/str conversion limit).
    except (ValueError, RecursionError) as exc:
        raise BellaError(
            f"malformed JSON: {exc.__class__.__name__}", kind="malformed_json"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("header"), dict):
        raise BellaError("expected a JSON object with a 'header' object", kind="bad_envelope")
    try:
        header = Header.model_validate(raw["header"])
    except ValidationError as exc:
        raise BellaError(f"invalid header: {_first_error(exc)}", kind="bad_header") from exc
    if header.namespace != NAMESPACE:
        raise BellaError(
            f"unknown namespace {header.namespace!r}: expected {NAMESPACE!r}",
            kind="unknown_namespace",
            task_id=header.task_id,
        )
    model: type[StartTranscription | StopTranscription]
    if header.name == START:
        model = StartTranscription
    elif header.name == STOP:
        model = StopTranscription
    else:
        raise BellaError(
            f"unknown message name {header.name!r}: expected {START} or {STOP}",
            kind="unknown_name",
            task_id=header.task_id,
        )
    body = dict(raw)
    if body.get("payload") is None:
        body.pop("payload", None)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BellaError(
            f"invalid {header.name}: {_first_error(exc)}",
            kind="invalid_payload",
            task_id=header.task_id,
        ) from exc


# --------------------------------------------------------------------------- events


def new_message_id() -> str:
    return uuid.uuid4().hex


def status_message(
    status: Status, code: str = "", message: str = "", source: str = "GATEWAY"
) -> str:
    """``SOURCE|CODE|message``, the shape of the reference's status messages."""
    if status is Status.SUCCESS:
        return SUCCESS_MESSAGE
    return f"{source}|{code.upper() or 'ERROR'}|{message}"


def event_frame(
    name: str,
    task_id: str,
    payload: dict[str, Any] | None = None,
    *,
    status: Status = Status.SUCCESS,
    message: str = SUCCESS_MESSAGE,
    message_id: Callable[[], str] = new_message_id,
) -> str:
    """One server event as the JSON text frame the client receives."""
    return json.dumps(
        {
            "header": {
                "message_id": message_id(),
                "task_id": task_id,
                "namespace": NAMESPACE,
                "name": name,
                "status": int(status),
                "status_message": message,
            },
            "payload": payload if payload is not None else {},
        },
        ensure_ascii=False,
    )


def task_failed(error: BellaError, task_id: str = "") -> str:
    """The `TaskFailed` event for a refused client frame."""
    return event_frame(
        "TaskFailed",
        error.task_id or task_id,
        {"data": None, "kind": error.kind, "message": str(error)},
        status=error.status,
        message=status_message(error.status, error.kind, str(error)),
    )
