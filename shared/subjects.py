"""NATS subject names. Every subject is built here, never inline.

Two planes (ARCHITECTURE.md):

* control: ``<svc>.assign`` is a queue-group endpoint; one replica answers with its id.
* data: ``<svc>.w.<replica>.in`` carries one replica's session traffic, in order;
  ``<svc>.w.<replica>.ctl`` carries cancels on a separate subscription so they are
  never stuck behind audio; ``session.<sid>.out`` carries results back to whichever
  gateway holds the call.
"""

from __future__ import annotations

import re
from functools import lru_cache

from shared.messages import ServiceName

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _token(value: str) -> str:
    # A token must not contain '.', '*', '>' or spaces, or it would change the subject's shape.
    if not _TOKEN.match(value):
        raise ValueError(f"invalid subject token: {value!r}")
    return value


def assign(service: ServiceName) -> str:
    return f"{service.value}.assign"


# Cached: called for every audio frame, with a handful of replicas.
@lru_cache(maxsize=1024)
def worker_in(service: ServiceName, replica: str) -> str:
    return f"{service.value}.w.{_token(replica)}.in"


# Cached: called for every audio frame, with a handful of replicas.
@lru_cache(maxsize=1024)
def worker_ctl(service: ServiceName, replica: str) -> str:
    return f"{service.value}.w.{_token(replica)}.ctl"


def session_out(sid: str) -> str:
    return f"session.{_token(sid)}.out"


def micro_ping(service: ServiceName, replica: str) -> str:
    return f"$SRV.PING.{service.value}.{_token(replica)}"


def micro_ping_all(service: ServiceName) -> str:
    """Every replica of ``service`` answers (with its id)."""
    return f"$SRV.PING.{service.value}"
