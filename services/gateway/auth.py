"""API keys and the per-key concurrent-call limit.

Keys come from ``GATEWAY_API_KEYS`` (comma-separated) and/or a secrets file
(``GATEWAY_API_KEYS_FILE``: one key per line, ``#`` comments and blank lines ignored, the
shape of a Kubernetes Secret mounted as a file). The file is re-read when its modification
time, size or inode changes (Kubernetes swaps a symlink on rotation), so keys rotate without
a restart.

A presented key is compared in constant time against every configured key (no early exit,
so timing reveals neither how much of a key matched nor which key it was). Keys are never
logged: a key is referred to by its `key_id`, a short SHA-256 fingerprint that is stable
across gateway replicas and restarts (session records store it, so a resumed call can be
checked against the key that started it). Keys must be random (>= 128 bits): a fingerprint
of a guessable key would let a reader of the logs guess it offline.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.errors import ConfigError

log = logging.getLogger(__name__)

QUERY_KEYS = ("api_key", "token")
KEY_ID_CHARS = 12  # 48 bits of fingerprint: unique among any realistic number of keys
MAX_KEY_CHARS = 512  # a longer configured "key" is a mistake (a pasted file, a certificate)

KeyId = str


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


def key_id(key: str) -> KeyId:
    """The loggable name of a key: a short fingerprint, never the key itself."""
    digest = hashlib.sha256(b"voicecall-api-key:" + key.encode(errors="surrogatepass")).hexdigest()
    return "k-" + digest[:KEY_ID_CHARS]


def parse_key_lines(text: str) -> tuple[str, ...]:
    """Keys from a secrets file: one per line; blank lines and ``#`` comments ignored."""
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if any(c.isspace() for c in stripped) or "," in stripped:
            # Say where, never what: the line holds a secret.
            raise ConfigError(f"API key file line {number}: a key has no spaces or commas")
        keys.append(stripped)
    return tuple(keys)


def _check(keys: tuple[str, ...]) -> tuple[str, ...]:
    for i, key in enumerate(keys):
        if len(key) > MAX_KEY_CHARS:
            raise ConfigError(f"API key #{i + 1} is longer than {MAX_KEY_CHARS} characters")
    # Order kept, duplicates (the same key in the variable and the file) dropped.
    return tuple(dict.fromkeys(keys))


class KeyRing:
    """The configured keys; `identify` says which one a request presented, by `key_id`."""

    def __init__(self, keys: tuple[str, ...], *, file: Path | None = None) -> None:
        self._static = _check(tuple(keys))
        self._file = file
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_keys: tuple[str, ...] = ()
        self._keys: tuple[tuple[bytes, KeyId], ...] = ()
        if file is not None:
            # At startup a missing or malformed file is a configuration error: fail fast.
            self._file_keys = self._read_file(file)
        self._rebuild()

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> tuple[KeyId, ...]:
        return tuple(kid for _, kid in self._keys)

    def identify(self, presented: str) -> KeyId | None:
        """The id of the matching key, or ``None``. Runs in time independent of which matched."""
        self.reload_if_changed()
        # Digests are compared, not the keys: equal lengths, so not even a key's length leaks.
        candidate = _digest(presented)
        found: KeyId | None = None
        for digest, kid in self._keys:
            # Every key is compared, and the comparison result is combined without a branch
            # that skips work, so a match on the first key costs what a miss costs.
            match = hmac.compare_digest(candidate, digest)
            found = kid if (match and found is None) else found
        return found

    def reload_if_changed(self) -> bool:
        """Re-read the secrets file if it changed; returns whether the keys were replaced.

        A file that vanished or became unreadable keeps the previous keys (a rotation swaps
        the file atomically, so this is a transient state or an operator error) and logs it.
        """
        if self._file is None:
            return False
        try:
            stamp = _stamp(self._file)
        except OSError as exc:
            log.warning("API key file unreadable, keeping %d key(s): %s", len(self), exc.strerror)
            return False
        if stamp == self._file_stamp:
            return False
        try:
            keys = self._read_file(self._file)
        except ConfigError as exc:
            log.warning("API key file not reloaded, keeping %d key(s): %s", len(self), exc)
            return False
        self._file_keys = keys
        self._rebuild()
        log.info("API key file reloaded: %d key(s) %s", len(self), ", ".join(self.key_ids))
        return True

    def _read_file(self, file: Path) -> tuple[str, ...]:
        try:
            stamp = _stamp(file)
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {file}: {exc}") from exc
        keys = _check(parse_key_lines(text))
        self._file_stamp = stamp
        return keys

    def _rebuild(self) -> None:
        keys = tuple(dict.fromkeys(self._static + self._file_keys))
        self._keys = tuple((_digest(k), key_id(k)) for k in keys)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode(errors="surrogatepass")).digest()


def _stamp(file: Path) -> tuple[int, int, int]:
    # stat() follows the symlink Kubernetes swaps on rotation, so the inode changes too.
    st = os.stat(file)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# websockets logs every handshake line at DEBUG: the request path (``?api_key=``) and each
# header (``Authorization: Bearer``). Those records pass through this filter.
_QUERY_SECRET = re.compile(r"(?i)\b((?:api_key|token)=)[^&\s]+")
_BEARER_SECRET = re.compile(r"(?i)\b(bearer\s+)\S+")
HANDSHAKE_LOGGERS = ("websockets.server", "websockets.client")


def redact(text: str) -> str:
    """``text`` with API keys in query strings and bearer credentials blanked."""
    return _BEARER_SECRET.sub(r"\1<redacted>", _QUERY_SECRET.sub(r"\1<redacted>", text))


class RedactKeys(logging.Filter):
    """Blanks API keys in log records' message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


_REDACTOR = RedactKeys()


def redact_handshake_logs() -> None:
    """Keep keys out of websockets' DEBUG logs; idempotent."""
    for name in HANDSHAKE_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


class CallLimiter:
    """Counts open calls per key; `acquire` refuses once a key holds ``limit`` calls."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[KeyId, int] = {}

    def acquire(self, key: KeyId) -> bool:
        if self._open.get(key, 0) >= self.limit:
            return False
        self._open[key] = self._open.get(key, 0) + 1
        return True

    def release(self, key: KeyId) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)

    def held(self, key: KeyId) -> int:
        return self._open.get(key, 0)
