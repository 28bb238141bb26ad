"""API keys and the per-key concurrent-call limit; sans-I/O.

Keys are compared in constant time against every configured key (no early exit, so
timing does not reveal how much of a key matched) and never logged: a key is referred
to by its index in the configured list.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

QUERY_KEYS = ("api_key", "token")


def presented_key(headers: Mapping[str, str], target: str) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else ``?api_key=``/``?token=``."""
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = parse_qs(urlsplit(target).query)
    for name in QUERY_KEYS:
        values = query.get(name)
        if values and values[0]:
            return values[0]
    return None


class KeyRing:
    """The configured keys; `identify` says which one (by index) a request presented."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, presented: str) -> int | None:
        candidate = presented.encode()
        found: int | None = None
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(candidate, key) and found is None:
                found = i
        return found


class CallLimiter:
    """Counts open calls per key; `acquire` refuses once a key holds ``limit`` calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[int, int] = {}

    def acquire(self, key_id: int) -> bool:
        if self._open.get(key_id, 0) >= self.limit:
            return False
        self._open[key_id] = self._open.get(key_id, 0) + 1
        return True

    def release(self, key_id: int) -> None:
        left = self._open.get(key_id, 0) - 1
        if left > 0:
            self._open[key_id] = left
        else:
            self._open.pop(key_id, None)

    def held(self, key_id: int) -> int:
        return self._open.get(key_id, 0)
