"""The Volcengine adapter: connect, BotReady, audio in, events and per-sentence WAVs out."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Sequence

from services.gateway.call import (
    Action,
    CallCore,
    CallFailed,
    CallOptions,
    CancelReason,
    Emit,
    SendAudio,
    TurnCancelled,
    TurnFailed,
    TurnStarted,
)
from services.gateway.conversation import ConversationDefaults
from services.gateway.personas import builtin_personas
from services.gateway.protocol import (
    AudioOut,
    BeginCall,
    CloseConnection,
    ForwardAudio,
    Refused,
    SendBytes,
    UpdateCall,
)
from services.gateway.volcengine.codec import (
    Compression,
    MessageType,
    Serialization,
    decode_frame,
    encode_frame,
)
from services.gateway.volcengine.session import (
    MAX_SENTENCE_MS,
    AudioDelivery,
    VolcengineSession,
    VolcState,
)
from shared.messages import (
    ErrorCode,
    LlmBegin,
    LlmEnd,
    Message,
    ServiceName,
    TranscriptFinal,
    TtsAudio,
    TtsBegin,
    TtsEnd,
    TtsSegment,
)

SID = "s1"


def _session(**query: str) -> VolcengineSession:
    return VolcengineSession({k: [v] for k, v in query.items()}, new_id=lambda: "fresh")


def _started(**query: str) -> VolcengineSession:
    session = _session(**query)
    session.opened()
    session.started()
    return session


def _event(frame: bytes | str | AudioOut) -> dict[str, object]:
    assert isinstance(frame, bytes)
    decoded = decode_frame(frame)
    assert decoded.type is MessageType.FULL_SERVER_RESPONSE
    assert decoded.serialization is Serialization.JSON
    event = json.loads(decoded.payload)
    assert isinstance(event, dict)
    return event


def _names(frames: Sequence[bytes | str | AudioOut]) -> list[str]:
    names = []
    for frame in frames:
        if isinstance(frame, AudioOut):
            names.append("WAV")
        else:
            names.append(str(_event(frame)["event"]))
    return names


def _client(event: dict[str, object], compression: Compression = Compression.NONE) -> bytes:
    return encode_frame(
        MessageType.FULL_CLIENT_REQUEST,
        json.dumps(event).encode(),
        serialization=Serialization.JSON,
        compression=compression,
    )


def test_connect_places_the_call_with_the_qingqing_persona() -> None:
    session = _session()
    [begin] = session.opened()
    assert isinstance(begin, BeginCall)
    options = begin.options
    qingqing = builtin_personas().select("qingqing")
    assert options.sid == "fresh"
    assert options.system_prompt == qingqing.system_prompt
    assert options.voice == qingqing.voice
    assert (options.client_rate, options.tts_rate, options.partials) == (16000, 24000, False)
    CallCore(options).open()  # the wire messages accept what the adapter asked for


def test_bot_ready_carries_the_session_id() -> None:
    session = _session()
    session.opened()
    [ready] = session.started()
    assert isinstance(ready, SendBytes)
    assert _event(ready.data) == {"event": "BotReady", "payload": {"session": "fresh"}}


def test_a_requested_session_is_resumed_under_its_id() -> None:
    session = _session(session="3f0c1a52-5c1e-4d5e-9a43-0d2f1b6b7f10")
    [begin] = session.opened()
    assert isinstance(begin, BeginCall)
    assert begin.options.sid == "3f0c1a52-5c1e-4d5e-9a43-0d2f1b6b7f10"
    [ready] = session.started()
    assert isinstance(ready, SendBytes)
    assert _event(ready.data)["payload"] == {"session": "3f0c1a52-5c1e-4d5e-9a43-0d2f1b6b7f10"}


def test_an_invalid_session_id_is_refused_and_closed() -> None:
    session = _session(session="../../etc passwd")
    out = session.opened()
    assert [type(o) for o in out] == [SendBytes, Refused, CloseConnection]
    assert isinstance(out[0], SendBytes)
    frame = decode_frame(out[0].data)
    assert frame.type is MessageType.SERVER_ERROR
    assert json.loads(frame.payload)["payload"]["error"]["code"] == "bad_session"
    assert session.state is VolcState.CLOSED


def test_unknown_persona_and_audio_mode_are_refused() -> None:
    for query in ({"persona": "nobody"}, {"audio": "mp3"}):
        out = _session(**query).opened()
        assert isinstance(out[-1], CloseConnection)


def test_a_persona_can_be_chosen() -> None:
    [begin] = _session(persona="qingqing:en").opened()
    assert isinstance(begin, BeginCall)
    assert begin.options.voice == builtin_personas().select("qingqing:en").voice


def test_the_deployment_default_persona_wins_over_qingqing() -> None:
    book = builtin_personas()
    defaults = ConversationDefaults(personas=book, default_persona=book.select("qingqing:en"))
    [begin] = VolcengineSession({}, conversation=defaults).opened()
    assert isinstance(begin, BeginCall)
    assert begin.options.voice == book.select("qingqing:en").voice


def test_audio_single_and_double_wrapped_is_forwarded() -> None:
    session = _started()
    pcm = b"\x01\x02" * 1600
    single = encode_frame(MessageType.AUDIO_ONLY_REQUEST, pcm)
    double = encode_frame(MessageType.AUDIO_ONLY_REQUEST, single)
    gzipped = encode_frame(MessageType.AUDIO_ONLY_REQUEST, pcm, compression=Compression.GZIP)
    for frame in (single, double, gzipped):
        assert session.on_binary(frame) == [ForwardAudio(pcm)]


def test_audio_after_a_failed_start_is_dropped() -> None:
    session = _session()
    session.opened()
    [error] = session.start_failed(ErrorCode.OVERLOADED, "no room")
    assert isinstance(error, SendBytes)
    assert _event(error.data)["event"] == "BotError"
    assert session.on_binary(encode_frame(MessageType.AUDIO_ONLY_REQUEST, b"\0\0")) == []


def test_bot_update_config_changes_the_voice() -> None:
    session = _started()
    frame = _client({"event": "BotUpdateConfig", "payload": {"speaker": "zh_male"}})
    assert session.on_binary(frame) == [UpdateCall(voice="zh_male")]
    gz = _client(
        {"event": "BotUpdateConfig", "payload": {"speaker": "en"}}, compression=Compression.GZIP
    )
    assert session.on_binary(gz) == [UpdateCall(voice="en")]
    assert session.on_binary(_client({"event": "BotUpdateConfig", "payload": {}})) == []


def _refusal(out: list[object]) -> str:
    assert len(out) == 2
    frame, refused = out
    assert isinstance(frame, SendBytes) and isinstance(refused, Refused)
    decoded = decode_frame(frame.data)
    assert decoded.type is MessageType.SERVER_ERROR
    body = json.loads(decoded.payload)
    assert body["event"] == "BotError"
    assert body["payload"]["error"]["code"] == refused.kind
    return refused.kind


def test_bad_client_frames_get_an_error_frame_and_the_call_goes_on() -> None:
    session = _started()
    cases = {
        "malformed_json": encode_frame(MessageType.FULL_CLIENT_REQUEST, b"{nope"),
        "bad_envelope": _client({"payload": {}}),
        "unknown_event": _client({"event": "UserAudio"}),
        "invalid_payload": _client({"event": "BotUpdateConfig", "payload": {"speaker": 7}}),
        "server_message_type": encode_frame(MessageType.FULL_SERVER_RESPONSE, b"{}"),
        "short_frame": b"\x11",
    }
    for kind, frame in cases.items():
        assert _refusal(list(session.on_binary(frame))) == kind
    assert _refusal(list(session.on_text("hello"))) == "text_frame"
    assert session.state is VolcState.ACTIVE


def test_a_turn_renders_sentence_events_and_one_wav_per_sentence() -> None:
    session = _started()
    frames: list[bytes | str | AudioOut] = []
    frames += session.render(TurnStarted(1, "item_a", "item_u"))
    final = TranscriptFinal(sid=SID, index=0, begin_ms=0, end_ms=900, text=" 你好 ")
    frames += session.render(final)
    frames += session.render(TtsSegment(sid=SID, turn=1, index=0, text="嗨！"))
    chunks = [b"\x01\x00" * 100, b"\x02\x00" * 50]
    for chunk in chunks:
        assert session.render_audio(1, chunk, 24000) == []  # held until the sentence ends
    frames += session.render(TtsSegment(sid=SID, turn=1, index=1, text="今天怎么样？"))
    assert session.render_audio(1, b"\x03\x00" * 10, 24000) == []
    frames += session.render(TtsEnd(sid=SID, turn=1, segments=2, audio_ms=10.0))
    assert _names(frames) == [
        "SentenceRecognized",
        "TTSSentenceStart",
        "WAV",
        "TTSSentenceStart",
        "WAV",
        "TTSDone",
    ]
    assert _event(frames[0])["payload"] == {"sentence": "你好"}
    assert _event(frames[1])["payload"] == {"sentence": "嗨！"}
    first, second = frames[2], frames[4]
    assert isinstance(first, AudioOut) and isinstance(second, AudioOut)
    assert (first.turn, first.pcm_bytes) == (1, 300)
    assert second.pcm_bytes == 20
    assert isinstance(first.data, bytes)
    audio = decode_frame(first.data)
    assert audio.type is MessageType.AUDIO_ONLY_RESPONSE
    with wave.open(io.BytesIO(audio.payload)) as wav:
        assert wav.getframerate() == 24000
        assert wav.readframes(wav.getnframes()) == b"".join(chunks)
    assert _event(frames[5]) == {"event": "TTSDone", "payload": {}}


def test_barge_in_drops_the_unfinished_sentence() -> None:
    session = _started()
    session.render(TurnStarted(1, "item_a", None))
    session.render(TtsSegment(sid=SID, turn=1, index=0, text="一句很长的话"))
    session.render_audio(1, b"\x01\x00" * 100, 24000)
    out = session.render(TurnCancelled(1, CancelReason.TURN_DETECTED, "item_a", "", 0.0))
    assert _names(out) == ["TTSDone"]
    session.render(TurnStarted(2, "item_b", None))
    session.render(TtsSegment(sid=SID, turn=2, index=0, text="新的"))
    session.render_audio(2, b"\x05\x00" * 4, 24000)
    out = session.render(TtsEnd(sid=SID, turn=2, segments=1, audio_ms=1.0))
    wav_out = out[0]
    assert isinstance(wav_out, AudioOut)
    assert (wav_out.turn, wav_out.pcm_bytes) == (2, 8)  # nothing of turn 1 in it


def test_a_very_long_sentence_is_split_so_the_buffer_stays_bounded() -> None:
    session = _started()
    session.render(TurnStarted(1, "item_a", None))
    session.render(TtsSegment(sid=SID, turn=1, index=0, text="..."))
    second = 24000 * 2
    out: list[bytes | AudioOut] = []
    for _ in range(MAX_SENTENCE_MS // 1000 + 1):
        out += session.render_audio(1, bytes(second), 24000)
    assert len(out) == 1 and isinstance(out[0], AudioOut)
    assert out[0].pcm_bytes == MAX_SENTENCE_MS // 1000 * second


def test_pcm_delivery_streams_chunks() -> None:
    session = _started(audio="pcm")
    assert session.delivery is AudioDelivery.PCM
    session.render(TurnStarted(1, "item_a", None))
    [frame] = session.render_audio(1, b"\x01\x00" * 10, 24000)
    assert isinstance(frame, bytes)
    decoded = decode_frame(frame)
    assert (decoded.type, decoded.payload) == (MessageType.AUDIO_ONLY_RESPONSE, b"\x01\x00" * 10)
    assert _names(session.render(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=1.0))) == ["TTSDone"]


def test_failures_become_bot_errors() -> None:
    session = _started()
    session.render(TurnStarted(1, "item_a", None))
    out = session.render(TurnFailed(1, ServiceName.LLM, ErrorCode.ENGINE_FAILED, "boom"))
    assert _names(out) == ["BotError", "TTSDone"]
    assert _event(out[0])["payload"] == {"error": {"code": "engine_failed", "message": "llm: boom"}}
    out = session.render(CallFailed(None, ErrorCode.TIMEOUT, "no audio for 60 s"))
    assert _event(out[0])["payload"] == {
        "error": {"code": "timeout", "message": "no audio for 60 s"}
    }


def test_wav_audio_lets_the_core_see_the_answer_played_out() -> None:
    """The core learns what was heard from the AudioOut counts: once every WAV is
    written, the answer is over (half duplex listens again, barge-in sees no answer)."""
    session = _started()
    core = CallCore(CallOptions(sid=SID))
    core.open()
    written: list[AudioOut] = []

    def carry_out(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                written.extend(f for f in session.render(action.event) if isinstance(f, AudioOut))
            elif isinstance(action, SendAudio):
                frames = session.render_audio(action.turn, action.pcm, 24000)
                written.extend(f for f in frames if isinstance(f, AudioOut))

    carry_out(core.respond("hello"))
    turn = core.turn
    messages: list[Message] = [
        LlmBegin(sid=SID, turn=turn),
        LlmEnd(sid=SID, turn=turn, text="Hi. Bye.", ttft_ms=1.0),
        TtsBegin(sid=SID, turn=turn),
        TtsSegment(sid=SID, turn=turn, index=0, text="Hi."),
        TtsAudio(sid=SID, turn=turn, index=0, seq=0, pcm=bytes(960), sample_rate=24000),
        TtsAudio(sid=SID, turn=turn, index=0, seq=1, pcm=bytes(480), sample_rate=24000),
        TtsSegment(sid=SID, turn=turn, index=1, text="Bye."),
        TtsAudio(sid=SID, turn=turn, index=1, seq=2, pcm=bytes(960), sample_rate=24000),
        TtsEnd(sid=SID, turn=turn, segments=2, audio_ms=50.0),
    ]
    for message in messages:
        carry_out(core.on_message(message, 0.0))
    assert [w.pcm_bytes for w in written] == [1440, 960]
    assert core.answering  # the audio is not written yet
    for w in written:
        core.audio_sent(w.turn, w.pcm_bytes)
    assert not core.answering


def test_audio_released_after_the_answer_ended_still_goes_out() -> None:
    """With barge-in resume, audio held during a false alarm is released after TtsEnd."""
    session = _started()
    session.render(TurnStarted(1, "item_a", None))
    session.render(TtsSegment(sid=SID, turn=1, index=0, text="x"))
    session.render(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=1.0))
    [late] = session.render_audio(1, b"\x01\x00" * 5, 24000)
    assert isinstance(late, AudioOut) and late.pcm_bytes == 10
