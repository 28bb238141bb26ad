"""Session state in NATS JetStream: see `shared.state.store` for the design."""

from shared.state.models import (
    History,
    HistoryLimits,
    SessionConfig,
    SessionRecord,
)
from shared.state.store import SessionStore, StateOptions, Stored

__all__ = [
    "History",
    "HistoryLimits",
    "SessionConfig",
    "SessionRecord",
    "SessionStore",
    "StateOptions",
    "Stored",
]
