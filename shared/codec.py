"""msgpack encoding of wire messages: the only place bytes meet `shared.messages`.

`decode` is the trust boundary for everything read off the bus: it returns a valid
message or raises `DecodeError`, for any input (fuzzed in tests/unit/test_fuzz_codec.py).
Beyond what the models check it refuses non-finite floats: NaN and infinity have no JSON
form, so one in a timestamp or a variable would turn into an invalid event for a client.
"""

from __future__ import annotations

import math
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
    data: bytes = msgpack.packb(
        message.model_dump(mode="python"), default=_default, use_bin_type=True
    )
    return data


_BATCH_HEAD = msgpack.packb("type") + msgpack.packb("batch") + msgpack.packb("items")


def encode_batch(encoded: list[bytes]) -> bytes:
    """A `Batch` of messages already encoded by `encode`, without encoding them again.

    msgpack is a concatenation format: a map header, the ``type`` and ``items`` keys,
    an array header and the items' own bytes decode exactly as ``Batch(items=[...])``.
    """
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(
        (packer.pack_map_header(2), _BATCH_HEAD, packer.pack_array_header(len(encoded)), *encoded)
    )


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
    if not _all_finite(raw):
        raise DecodeError("message holds a NaN or infinite number")
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(f"invalid message: {exc.error_count()} error(s)") from exc


def _all_finite(raw: dict[Any, Any]) -> bool:
    # Iterative: msgpack nests up to 1024 levels, deeper than Python's recursion limit.
    stack: list[Any] = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True
