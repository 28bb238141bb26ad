"""Fuzzing the Coze adapter: whatever a client sends, the answer is the protocol's own
(``chat.updated``, ``error`` events, call commands), never an exception or a traceback.

10,000 arbitrary text frames; then fewer (the machine is small) well-formed envelopes
whose ``data`` is arbitrary JSON, for every client event type.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.call import CallCore
from services.gateway.coze.messages import EVENT_MODELS
from services.gateway.coze.session import CozeSession
from services.gateway.protocol import (
    BeginCall,
    CancelResponse,
    ClearInput,
    CommitInput,
    DeleteItem,
    ForwardAudio,
    Refused,
    Respond,
    SendText,
    UpdateCall,
)

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=8,
)
# Field names the events have, so arbitrary data reaches the models' validators.
_FIELDS = st.sampled_from(
    [
        "delta",
        "role",
        "content",
        "content_type",
        "input_audio",
        "output_audio",
        "turn_detection",
        "chat_config",
        "event_subscriptions",
        "codec",
        "sample_rate",
        "type",
    ]
)
_data = st.dictionaries(_FIELDS, _json | st.dictionaries(_FIELDS, _json), max_size=3)

_ALLOWED = (
    SendText,
    Refused,
    BeginCall,
    ForwardAudio,
    CommitInput,
    ClearInput,
    CancelResponse,
    Respond,
    DeleteItem,
    UpdateCall,
)


def _check(session: CozeSession, outputs: list[Any]) -> None:
    for out in outputs:
        assert isinstance(out, _ALLOWED)
        if isinstance(out, SendText):
            event = json.loads(out.text)
            assert set(event) == {"id", "event_type", "data"}
            assert "Traceback" not in out.text
        if isinstance(out, BeginCall):
            CallCore(out.options).open()  # what the adapter accepted, the wire accepts
            session.started()


SESSION = CozeSession({"bot_id": ["fuzz"]})


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check(SESSION, SESSION.on_text(text))


@settings(FUZZ, max_examples=800)
@given(event_type=st.sampled_from(sorted(EVENT_MODELS)), data=_data | _json)
def test_every_event_with_arbitrary_data(event_type: str, data: Any) -> None:
    session = CozeSession({"bot_id": ["fuzz"]})  # fresh: chat.update before the call too
    frame = json.dumps({"id": "x", "event_type": event_type, "data": data})
    _check(session, session.on_text(frame))
    _check(session, session.on_text(frame))  # and again, once the call may run
