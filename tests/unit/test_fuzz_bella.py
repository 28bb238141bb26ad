"""Fuzzing the Bella adapter: whatever a client sends, the answer is the protocol's own
(`pong`, events, `TaskFailed`), never an exception, a traceback or an internal detail.

10,000 inputs each: arbitrary text to `parse_text`; valid Start/Stop frames with one or
two fields (header, payload, LLM and TTS options, workers) replaced by values of other
types, limits and template syntax; and whole conversations (text and binary frames plus
the connection's callbacks, in any order) driven through `BellaSession`.
Every `BeginCall` a session emits is also opened by the call core, so options that the
adapter accepted but the wire messages refuse are found here, not in production.
"""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.bella.codec import START, STOP, BellaError, parse_text
from services.gateway.bella.messages import CLIENT_RATES, NAMESPACE, StartTranscription
from services.gateway.bella.session import BellaSession
from services.gateway.call import CallCore
from services.gateway.protocol import BeginCall, Output, Refused, SendText
from shared.messages import ErrorCode

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(width=32)  # NaN and infinity too: json.dumps writes them, json.loads reads them
    | st.text(max_size=8)
)
# Values a field is likely to be tested with: type confusions, limits, template syntax.
_INTERESTING: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    99,
    100,
    5000,
    5001,
    2**31,
    2**63,
    10**30,
    0.5,
    2.0001,
    "",
    " ",
    "x",
    "pcm",
    "PCM",
    "wav",
    "auto",
    "text",
    "json",
    "object",
    "qingqing",
    "qingqing:en",
    "nobody",
    START,
    STOP,
    NAMESPACE,
    "{{",
    "}}",
    "{{ x }}",
    "{% if %}",
    "{{ x.__class__ }}",
    "{{ undefined_var }}",
    "{",
    '{"type": "object"}',
    '{"type": 3}',
    *CLIENT_RATES,
    11025,
    96000,
    [],
    {},
    [1],
    {"a": 1},
    {"type": "object"},
    {"type": 3},
    {"type": "object", "properties": {"a": {"type": "nope"}}},
)
_value: st.SearchStrategy[Any] = (
    st.sampled_from(_INTERESTING)
    | _scalars
    # Around the wire messages' 32,000-character limits (built by `map`: a short repr).
    | st.integers(31_990, 32_010).map(lambda n: "x" * n)
)

_WORKER = {
    "model": "auto",
    "blocking": True,
    "variable_name": "mood",
    "variable_type": "text",
    "sys_prompt": "Say the mood of: {{ user_message }}",
    "prompt": "{{ user_message }}",
    "temperature": 0.3,
}
_BASES: tuple[dict[str, Any], ...] = (
    {"header": {"name": START, "task_id": "t1"}, "payload": {}},
    {
        "header": {"name": START, "namespace": NAMESPACE, "task_id": "t1", "message_id": "m"},
        "payload": {
            "format": "pcm",
            "sample_rate": 16000,
            "enable_intermediate_result": True,
            "max_sentence_silence": 600,
            "variables": {"name": "Ada"},
            "llm_option": {
                "main": {"model": "auto", "sys_prompt": "Hi {{ name }}", "temperature": 0.7},
                "workers": [_WORKER],
            },
            "tts_option": {"voice": "default", "sample_rate": 24000},
        },
    },
    {"header": {"name": STOP, "task_id": "t1"}, "payload": {}},
)
_PATHS: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split("."))
    for p in (
        "header",
        "header.name",
        "header.namespace",
        "header.task_id",
        "header.message_id",
        "header.appkey",
        "payload",
        "payload.format",
        "payload.sample_rate",
        "payload.enable_intermediate_result",
        "payload.max_sentence_silence",
        "payload.variables",
        "payload.variables.name",
        "payload.persona",
        "payload.llm_option",
        "payload.llm_option.main",
        "payload.llm_option.main.model",
        "payload.llm_option.main.sys_prompt",
        "payload.llm_option.main.prompt",
        "payload.llm_option.main.temperature",
        "payload.llm_option.workers",
        "payload.llm_option.workers.0",
        *(f"payload.llm_option.workers.0.{k}" for k in (*_WORKER, "json_schema")),
        "payload.tts_option",
        "payload.tts_option.model",
        "payload.tts_option.voice",
        "payload.tts_option.sample_rate",
        "extra",
    )
)


def _mutated(base: dict[str, Any], edits: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    """``base`` with each path set to its value (containers on the way created as needed)."""
    doc: dict[str, Any] = copy.deepcopy(base)
    for path, shared_value in edits:
        value = copy.deepcopy(shared_value)  # sampled values are shared between examples
        node: Any = doc
        for i, step in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not node:
                    node.append({})
                if last:
                    node[0] = value
                else:
                    node = node[0]
            elif isinstance(node, dict):
                if last:
                    node[step] = value
                else:
                    if not isinstance(node.get(step), (dict, list)):
                        node[step] = {}
                    node = node[step]
            else:
                break  # an earlier edit put a scalar here: nothing below it to edit
    return doc


def _frame(envelope: Any) -> str:
    return json.dumps(envelope)


def _check_parse(text: str) -> None:
    try:
        command = parse_text(text)
    except BellaError as exc:
        _check_client_message(str(exc))
        return
    if isinstance(command, StartTranscription):
        # Accepted: the session turns it into call options the call core must be able to
        # open (wire messages have limits of their own).
        outputs = BellaSession(answer=True).on_text(text)
        _check_outputs(outputs)
        for out in outputs:
            if isinstance(out, BeginCall):
                CallCore(out.options).open()


def _check_client_message(message: str) -> None:
    """What a client reads about its mistake names the mistake, not our internals."""
    for leak in ("Traceback", 'File "', "pydantic", "errors.pydantic.dev", "Error("):
        assert leak not in message, message


@FUZZ
@given(st.text(max_size=64))
def test_parse_arbitrary_text(text: str) -> None:
    _check_parse(text)


@FUZZ
@given(
    st.sampled_from(_BASES),
    st.sampled_from(_PATHS),
    _value,
    st.sampled_from(_PATHS),
    _value,
    st.booleans(),
)
def test_parse_envelopes_with_wrong_fields_and_types(
    base: dict[str, Any],
    path1: tuple[str, ...],
    value1: Any,
    path2: tuple[str, ...],
    value2: Any,
    twice: bool,
) -> None:
    edits = [(path1, value1), (path2, value2)] if twice else [(path1, value1)]
    _check_parse(_frame(_mutated(base, edits)))


def test_parse_hostile_documents() -> None:
    for text in (
        "[" * 100_000,  # deeper than the JSON parser's recursion limit
        '{"header": ' + "1" * 5000 + "}",  # beyond CPython's int/str conversion limit
        '{"header": {"name": "StartTranscription"}, "payload": {"variables": '
        + '{"a": ' * 5000
        + "1"
        + "}" * 5000
        + "}}",
        '{"header": {"name": "StartTranscription"}, "payload": {"sample_rate": NaN}}',
        '{"header": {"name": "StartTranscription"}, "header": 1}',
        "\ud800",
        "\x00",
    ):
        _check_parse(text)


def test_echoed_header_fields_are_bounded() -> None:
    """``task_id`` comes back in every event of a task: a huge one would amplify output."""
    huge = json.dumps({"header": {"name": START, "task_id": "t" * 100_000}})
    outputs = BellaSession(answer=True).on_text(huge)
    assert [type(o) for o in outputs] == [SendText, Refused]
    refusal = outputs[0]
    assert isinstance(refusal, SendText) and len(refusal.text) < 1000


# --------------------------------------------------------------------------- whole sessions


def _command(name: str, task_id: str = "t1", **payload: Any) -> str:
    return json.dumps({"header": {"name": name, "task_id": task_id}, "payload": payload})


# Frames for whole sessions come from a fixed pool: the payload space is covered by the
# envelope test above; here the order of frames and callbacks is what is explored.
_POOL = (
    _command(START),
    _command(START, sample_rate=48000, enable_intermediate_result=True),
    _command(START, task_id=""),
    _command(START, sample_rate=44100),
    _command(START, llm_option={"main": {"sys_prompt": "be brief", "temperature": 0.2}}),
    _command(STOP),
    _command(STOP, task_id="other"),
    _command(STOP, task_id=""),
    _command("Other"),
    json.dumps({"header": {"name": START, "namespace": "Nope"}}),
    json.dumps({"header": "x"}),
    "ping",
    "{",
    "",
)
_ACTIONS: tuple[tuple[str, Any], ...] = (
    *(("text", frame) for frame in _POOL),
    ("binary", b""),
    ("binary", b"\x00"),
    ("binary", b"\x01\x02\x03"),
    ("placed", True),
    ("placed", False),
    ("finished", None),
)
# Indexes into a table: a list of small integers is far cheaper to generate (and shrink)
# than a list of tagged unions, which is what lets 10,000 sessions run in seconds.
_steps = st.lists(st.integers(0, len(_ACTIONS) - 1), max_size=8).map(
    lambda picks: [_ACTIONS[i] for i in picks]
)


def _check_outputs(outputs: list[Output]) -> None:
    for i, out in enumerate(outputs):
        assert isinstance(out, typing.get_args(Output)), out
        if isinstance(out, SendText) and out.text != "pong":
            event = json.loads(out.text)  # valid JSON, the protocol's envelope
            header = event["header"]
            assert header["namespace"] == NAMESPACE
            if header["name"] == "TaskFailed":
                _check_client_message(event["payload"]["message"])
                _check_client_message(header["status_message"])
        if isinstance(out, Refused):
            # A refusal is always explained to the client by the frame before it.
            before = outputs[i - 1]
            assert isinstance(before, SendText)
            assert json.loads(before.text)["header"]["name"] == "TaskFailed"


@FUZZ
@given(st.booleans(), _steps)
def test_session_never_raises(answer: bool, steps: list[tuple[str, Any]]) -> None:
    session = BellaSession(answer=answer)
    placing: BeginCall | None = None
    for kind, arg in steps:
        if kind == "text":
            outputs = session.on_text(arg)
        elif kind == "binary":
            outputs = session.on_binary(arg)
        elif kind == "placed":
            if placing is None:
                continue  # the connection calls back only for a call it is placing
            if arg:
                CallCore(placing.options).open()  # the options make valid wire messages
                outputs = session.started()
            else:
                outputs = session.start_failed(ErrorCode.OVERLOADED, "overloaded: no room")
            placing = None
        else:
            session.finished()
            continue
        _check_outputs(outputs)
        for out in outputs:
            if isinstance(out, BeginCall):
                assert placing is None  # one call per connection
                placing = out
