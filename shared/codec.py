"""msgpack encoding of wire messages: the only place bytes meet `shared.messages`."""

from __future__ import annotations

from enum import Enum
from typing import Any

import msgpack
from pydantic import ValidationError

from shared.errors import DecodeError
from shared.messages import MESSAGE_ADAPTER, Message, WireModel


def _default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(message: WireModel) -> bytes:
    """Serialize one wire message (bytes fields stay binary)."""
    return msgpack.packb(message.model_dump(mode="python"), default=_default, use_bin_type=True)


def decode(data: bytes) -> Message:
    """Parse bytes into the matching message model.

    Raises `DecodeError` for anything that is not a valid message: callers drop
    and count such input, they never crash on it.
    """
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"not msgpack: {exc}") from exc
    if not isinstance(raw, dict):
        raise DecodeError("message is not a map")
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(f"invalid message: {exc.error_count()} error(s)") from exc
