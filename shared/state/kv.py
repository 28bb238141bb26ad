"""One JetStream KV bucket with compare-and-set writes that carry a per-key TTL.

nats-py's `KeyValue` covers most of this, but not all, so writes go through the JetStream
publish API with the same headers it uses:

* ``update`` cannot set a TTL (only ``create`` can), and a session's TTL changes with every
  write (live vs grace period);
* after a key expired, the server leaves a marker (``Nats-Marker-Reason``) that
  ``KeyValue.get`` returns as an entry whose value is empty or ``None`` and that
  ``KeyValue.create`` does not recognize as a deleted key, so creating the key again fails.

Per-key TTL needs nats-server >= 2.11 (older servers silently ignore it; opening the
bucket checks the server's JetStream API level and refuses them). Markers (and so expiry
events for watchers) exist because the bucket sets ``limit_marker_ttl``. TTLs are whole
seconds on the wire; they are rounded up here.

Reads go to the stream leader (no direct get), so a reader sees the latest revision:
compare-and-set needs it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from shared.errors import BusError, ConfigError, StateConflictError

log = logging.getLogger(__name__)

KV_OPERATION = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
ROLLUP = "Nats-Rollup"
# 10071 wrong last sequence (with the sequence), 10164 its constant form.
_WRONG_LAST_SEQUENCE = (10071, 10164)


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


@dataclass(frozen=True)
class _Latest:
    """The newest message on a key: a value, or a tombstone (deleted, purged, expired)."""

    value: bytes | None
    revision: int


def _ttl(seconds: float) -> int:
    if not seconds > 0:
        raise ValueError(f"a TTL must be positive, not {seconds}")
    return max(1, math.ceil(seconds))


def _bus_error(what: str, exc: Exception) -> BusError:
    return BusError(f"{what} failed: {exc.__class__.__name__}")


class CasBucket:
    """Compare-and-set access to one bucket; `open` creates it if it does not exist."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        bucket: str,
        *,
        max_value_bytes: int,
        marker_ttl_s: float,
        replicas: int = 1,
        description: str = "",
    ) -> CasBucket:
        config = api.KeyValueConfig(
            bucket=bucket,
            description=description or None,
            history=1,
            max_value_size=max_value_bytes,
            storage=api.StorageType.FILE,
            replicas=replicas,
            limit_marker_ttl=_ttl(marker_ttl_s),
        )
        try:
            # Idempotent for an identical configuration, so every replica may call it.
            await js.create_key_value(config)
        except nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError as exc:
            raise ConfigError(
                "session state needs nats-server >= 2.11 (per-key TTL); this server is older"
            ) from exc
        except nats.js.errors.BadRequestError as exc:
            # Exists with another configuration (an older deployment, another replica's
            # different settings): use it as it is rather than refusing to start.
            if exc.err_code != 10058:  # stream name already in use
                raise _bus_error(f"creating bucket {bucket}", exc) from exc
            log.warning("bucket %s exists with another configuration: using it as it is", bucket)
        except (nats.errors.Error, TimeoutError) as exc:
            raise _bus_error(f"creating bucket {bucket}", exc) from exc
        return cls(js, bucket)

    def subject(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> Entry | None:
        """The current value, or ``None`` if the key is absent, deleted or expired."""
        latest = await self._latest(key)
        if latest is None or latest.value is None:
            return None
        return Entry(latest.value, latest.revision)

    async def create(self, key: str, value: bytes, *, ttl_s: float) -> int:
        """Write ``key`` only if it holds no value; `StateConflictError` if it does."""
        try:
            return await self.write(key, value, last=0, ttl_s=ttl_s)
        except StateConflictError:
            latest = await self._latest(key)
            if latest is None or latest.value is not None:
                raise
            # A tombstone (deleted, purged or expired key): replace it, still by CAS.
            return await self.write(key, value, last=latest.revision, ttl_s=ttl_s)

    async def write(self, key: str, value: bytes, *, last: int, ttl_s: float) -> int:
        """Write if the key's last revision is ``last`` (0: none); returns the new revision."""
        if not value:
            raise ValueError("an empty value reads as a tombstone")
        headers = {EXPECTED_LAST: str(last)}
        try:
            ack = await self._js.publish(
                self.subject(key), value, headers=headers, msg_ttl=_ttl(ttl_s)
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise StateConflictError(f"{self.bucket}/{key}", last) from exc
            raise _bus_error(f"writing {self.bucket}", exc) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise _bus_error(f"writing {self.bucket}", exc) from exc
        return int(ack.seq)

    async def purge(self, key: str, *, marker_ttl_s: float) -> None:
        """Remove every revision of ``key``; the purge marker itself expires."""
        headers = {KV_OPERATION: "PURGE", ROLLUP: "sub"}
        try:
            await self._js.publish(
                self.subject(key), b"", headers=headers, msg_ttl=_ttl(marker_ttl_s)
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise _bus_error(f"purging {self.bucket}", exc) from exc

    async def _latest(self, key: str) -> _Latest | None:
        try:
            msg = await self._js.get_msg(self.stream, subject=self.subject(key))
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise _bus_error(f"reading {self.bucket}", exc) from exc
        headers = msg.headers or {}
        tombstone = (
            headers.get(KV_OPERATION) in ("DEL", "PURGE")
            or MARKER_REASON in headers
            or not msg.data  # the expired-key quirk: a marker read back as an empty value
        )
        return _Latest(None if tombstone else msg.data, int(msg.seq or 0))
