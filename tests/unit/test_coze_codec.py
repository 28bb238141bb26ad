"""The Coze codec and audio formats: parsing, refusals, G.711, WAV streams, stereo."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from services.gateway.coze.audio import InputDecoder, InputFormat, OutputFormat
from services.gateway.coze.codec import (
    CozeError,
    CozeErrorCode,
    decode_base64,
    event_frame,
    parse_event,
)
from services.gateway.coze.messages import (
    AudioAppend,
    ChatUpdate,
    InputAudio,
    MessageCreate,
    OutputAudio,
    PcmConfig,
)
from services.gateway.openai.g711 import pcm16_to_alaw, pcm16_to_ulaw

# The chat.update the ESP32 board sends (seed 004), opus output replaced by pcm.
ESP32_UPDATE = {
    "id": "0a7c8af3-e729-56e7-47b1-ecb3a8adb149",
    "event_type": "chat.update",
    "data": {
        "chat_config": {
            "auto_save_history": True,
            "conversation_id": "74970793",
            "user_id": "userid_123",
            "meta_data": {},
            "custom_variables": {},
            "extra_params": {},
            "parameters": {"custom_var_1": "测试"},
        },
        "input_audio": {
            "format": "pcm",
            "codec": "pcm",
            "sample_rate": 16000,
            "channel": 1,
            "bit_depth": 16,
        },
        "turn_detection": {
            "type": "server_vad",
            "prefix_padding_ms": 600,
            "silence_duration_ms": 500,
        },
        "output_audio": {"codec": "pcm", "speech_rate": 20, "voice_id": "zh_female"},
        "event_subscriptions": ["conversation.audio.delta", "error"],
    },
}


def test_the_esp32_update_parses() -> None:
    event = parse_event(json.dumps(ESP32_UPDATE))
    assert isinstance(event, ChatUpdate)
    assert event.data.input_audio == InputAudio(
        format="pcm", codec="pcm", sample_rate=16000, channel=1, bit_depth=16
    )


def test_append_and_message_parse() -> None:
    event = parse_event(
        '{"id":"1","event_type":"input_audio_buffer.append","data":{"delta":"AAA="}}'
    )
    assert isinstance(event, AudioAppend) and decode_base64(event.data.delta) == b"\0\0"
    msg = parse_event(
        '{"id":"2","event_type":"conversation.message.create",'
        '"data":{"role":"user","content_type":"text","content":"hi"}}'
    )
    assert isinstance(msg, MessageCreate) and msg.data.content == "hi"


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        ("{nope", "malformed_json", CozeErrorCode.INVALID_REQUEST),
        ("[1]", "bad_envelope", CozeErrorCode.INVALID_REQUEST),
        ('{"event_type": 3}', "bad_envelope", CozeErrorCode.INVALID_REQUEST),
        ('{"event_type": "chat.go"}', "unknown_event", CozeErrorCode.UNKNOWN_EVENT),
        (
            '{"event_type": "input_audio_buffer.append", "data": {}}',
            "invalid_event",
            CozeErrorCode.INVALID_REQUEST,
        ),
        (
            '{"event_type": "chat.update", "data": {"input_audio": {"sample_rate": "16000"}}}',
            "invalid_event",
            CozeErrorCode.INVALID_REQUEST,
        ),
        ("1" * 5000, "malformed_json", CozeErrorCode.INVALID_REQUEST),
    ],
)
def test_bad_frames_are_refused(text: str, kind: str, code: CozeErrorCode) -> None:
    with pytest.raises(CozeError) as info:
        parse_event(text)
    assert (info.value.kind, info.value.error_code) == (kind, code)


def test_bad_base64_is_refused() -> None:
    with pytest.raises(CozeError) as info:
        decode_base64("not base64!")
    assert info.value.error_code is CozeErrorCode.INVALID_AUDIO


def test_event_frame_shape() -> None:
    assert json.loads(event_frame("error", {"code": 4000, "msg": "x"}, "e1")) == {
        "id": "e1",
        "event_type": "error",
        "data": {"code": 4000, "msg": "x"},
    }


def _tone(n: int) -> bytes:
    t = np.arange(n)
    return (np.sin(t / 7.0) * 8000).astype("<i2").tobytes()


@pytest.mark.parametrize(("codec", "encode"), [("g711a", pcm16_to_alaw), ("g711u", pcm16_to_ulaw)])
def test_g711_input_is_decoded_at_8khz(codec: str, encode: object) -> None:
    assert callable(encode)
    fmt = InputFormat.from_config(InputAudio(codec=codec))  # type: ignore[arg-type]
    assert fmt.rate == 8000
    pcm = _tone(800)
    decoded = InputDecoder(fmt).decode(encode(pcm))
    original = np.frombuffer(pcm, "<i2").astype(float)
    error = np.abs(np.frombuffer(decoded, "<i2") - original).max()
    assert len(decoded) == len(pcm) and error < 300  # G.711 is lossy, not wrong


def test_wav_stream_header_is_skipped_even_when_split() -> None:
    pcm = _tone(100)
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16)
    header += struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", 0)
    decoder = InputDecoder(InputFormat.from_config(InputAudio(format="wav")))
    stream = header + pcm
    out = decoder.decode(stream[:10]) + decoder.decode(stream[10:30]) + decoder.decode(stream[30:])
    assert out == pcm


def test_stereo_is_mixed_down_and_split_samples_wait() -> None:
    decoder = InputDecoder(InputFormat.from_config(InputAudio(channel=2)))
    frames = struct.pack("<4h", 100, 300, -100, -300)
    assert decoder.decode(frames[:3]) == b""
    assert decoder.decode(frames[3:]) == struct.pack("<2h", 200, -200)


@pytest.mark.parametrize(
    "cfg",
    [
        InputAudio(codec="opus"),
        InputAudio(format="ogg"),
        InputAudio(codec="g711a", sample_rate=16000),
        InputAudio(sample_rate=11025),
        InputAudio(bit_depth=24),
    ],
)
def test_unsupported_input_is_refused(cfg: InputAudio) -> None:
    with pytest.raises(CozeError) as info:
        InputFormat.from_config(cfg)
    assert info.value.error_code is CozeErrorCode.UNSUPPORTED


def test_output_formats() -> None:
    assert OutputFormat.from_config(None) == OutputFormat("pcm", 24000)
    pcm16k = OutputFormat.from_config(OutputAudio(pcm_config=PcmConfig(sample_rate=16000)))
    assert pcm16k.rate == 16000
    ulaw = OutputFormat.from_config(OutputAudio(codec="g711u"))
    assert ulaw.rate == 8000 and ulaw.encode(_tone(10)) == pcm16_to_ulaw(_tone(10))
    for codec in ("opus", "mp3"):
        with pytest.raises(CozeError, match="not supported"):
            OutputFormat.from_config(OutputAudio.model_validate({"codec": codec}))
