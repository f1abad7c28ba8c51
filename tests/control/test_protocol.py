"""Request decoding (through the wire schema), pipeline events on the wire, ws audio framing: no sockets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.events import FinalTranscript, InterimTranscript, PipelineNotice, SpeechEnded, SpeechStarted, Word
from control.protocol import AudioFormat, ProtocolError, event_message
from control.schema import ServerMessage, SessionStart, decode_request, encode
from control.ws_audio import WsAudioInput


@pytest.mark.parametrize(
    "text, code",
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"id": 1}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "teleport", "id": "x"}', "unknown_type"),
        ('{"type": "ping", "id": [1]}', "bad_message"),
        ("[" * 100000, "message_too_large"),
    ],
)
def test_bad_messages_get_their_own_codes(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(text)
    assert info.value.code == code


def test_unknown_type_echoes_id() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request('{"type": "teleport", "id": "x"}')
    assert info.value.request_id == "x"


def test_session_start_defaults_and_fields() -> None:
    request = decode_request('{"type": "session.start", "id": 7}')
    assert isinstance(request, SessionStart) and request.id == 7
    assert request.transport is None and request.audio is None and request.interim and not request.echo
    request = decode_request(
        json.dumps(
            {
                "type": "session.start",
                "transport": "ws",
                "audio": {"encoding": "pcm_s16le", "sample_rate": 48000, "channels": 2},
                "interim": False,
                "echo": True,
                "resume": {"session_id": "s_1", "last_seq": 4},
            }
        )
    )
    assert isinstance(request, SessionStart)
    assert request.audio == AudioFormat(sample_rate=48000, channels=2)
    assert request.resume is not None and request.resume.last_seq == 4
    assert request.echo and not request.interim


@pytest.mark.parametrize(
    "body, code",
    [
        ({"audio": {"encoding": "opus"}}, "audio.unsupported_format"),
        ({"audio": {"sample_rate": 12345}}, "audio.unsupported_format"),
        ({"audio": {"channels": 6}}, "audio.unsupported_format"),
        ({"audio": "pcm"}, "bad_request"),
        ({"transport": "carrier-pigeon"}, "bad_request"),
        ({"resume": {"session_id": "", "last_seq": 1}}, "bad_request"),
        ({"resume": {"session_id": "s", "last_seq": -1}}, "bad_request"),
        ({"interim": "yes"}, "bad_request"),
        ({"protocol": 2}, "protocol.unsupported_version"),
    ],
)
def test_session_start_refusals(body: dict, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(json.dumps({"type": "session.start", "id": "a", **body}))
    assert info.value.code == code
    assert info.value.request_id == "a"


def test_ws_audio_keeps_partial_samples_for_the_next_frame() -> None:
    audio = WsAudioInput(AudioFormat())
    samples = np.arange(10, dtype="<i2").tobytes()  # 20 bytes
    first, error = audio.accept(samples[:7])
    assert error is not None and error.code == "audio.odd_length"
    assert first is not None and first.tolist() == [0, 1, 2]
    second, error = audio.accept(samples[7:])
    assert error is None
    assert second is not None and second.tolist() == [3, 4, 5, 6, 7, 8, 9]


def test_ws_audio_refuses_frames_over_one_second() -> None:
    audio = WsAudioInput(AudioFormat(sample_rate=16000), max_frame_s=1.0)
    samples, error = audio.accept(bytes(32002))
    assert samples is None and error is not None and error.code == "audio.frame_too_large"
    ok, error = audio.accept(bytes(32000))
    assert error is None and ok is not None and len(ok) == 16000


def test_ws_audio_stereo_frames_align_on_sample_frames() -> None:
    audio = WsAudioInput(AudioFormat(channels=2))
    samples, error = audio.accept(bytes(6))
    assert samples is not None and len(samples) == 2  # one stereo frame; 2 bytes carried
    assert error is not None and error.code == "audio.odd_length"


def wire(message: ServerMessage) -> dict:
    """A message as the JSON object the socket sends."""
    return json.loads(encode(message))


def test_event_messages() -> None:
    start = wire(event_message(SpeechStarted("u1", 1.23456), 1))
    assert start == {"type": "speech.start", "seq": 1, "utterance_id": "u1", "start": 1.235}
    interim = wire(event_message(InterimTranscript("u1", "hello", 1.0, 2.0, participant="bob"), 2))
    assert interim == {
        "type": "transcript.interim", "seq": 2, "utterance_id": "u1", "text": "hello", "start": 1.0, "end": 2.0,
        "participant": "bob",
    }
    words = (Word("hello", 1.0, 1.5, 0.9),)
    final = wire(event_message(FinalTranscript("u1", "hello", 1.0, 2.0, "silence", words=words), 3))
    assert final["words"] == [{"word": "hello", "start": 1.0, "end": 1.5, "probability": 0.9, "confidence": 0.9}]
    assert final["reason"] == "silence"
    assert wire(event_message(SpeechEnded("u1", 2.5), 4)) == {"type": "speech.end", "seq": 4, "utterance_id": "u1", "end": 2.5}
    notice = PipelineNotice("asr_backlog", "behind", {"participant": None, "pending_finals": 3})
    status = wire(event_message(notice, 5))
    assert status == {"type": "status", "seq": 5, "code": "asr_backlog", "message": "behind", "pending_finals": 3}
    with pytest.raises(TypeError):  # a detail the schema does not declare never reaches the wire
        event_message(PipelineNotice("x", "y", {"undeclared": 1}), 6)
