"""The web tests' check of the page's control frames bites (no browser needed)."""

from __future__ import annotations

import json

import pytest

from browser_support import ControlFrames, json_schema_errors

pytestmark = pytest.mark.timeout(10)


def test_frames_outside_the_schema_are_reported_both_ways() -> None:
    frames = ControlFrames()
    frames._sent('{"type": "session.start", "id": 1, "transport": "ws", "interim": false}')  # valid
    frames._received(json.dumps({"type": "pong", "id": 1, "time": 1.0}))  # valid
    assert frames.off_schema == [] and (frames.sent, frames.received) == (1, 1)
    frames._sent('{"type": "session.start", "interm": false}')  # a misspelt option
    frames._sent('{"type": "session.sart"}')  # an unknown type
    frames._received(json.dumps({"type": "pong", "id": 1}))  # a required field missing
    frames._sent(b"\x00\x01")  # audio: not a control message, not checked
    by_check = [(entry.split("'")[1], "JSON Schema" in entry) for entry in frames.off_schema]
    # The misspelt option is found by msgspec only (the published schema lets clients add fields);
    # the unknown type and the missing field by both checks.
    assert by_check == [
        ('{"type": "session.start", "interm": false}', False),
        ('{"type": "session.sart"}', True),
        ('{"type": "session.sart"}', False),
        ('{"type": "pong", "id": 1}', True),
        ('{"type": "pong", "id": 1}', False),
    ], frames.off_schema
    assert "interm" in frames.off_schema[0] and "unknown_type" in frames.off_schema[2]


def test_the_json_schema_validator_rejects_bad_frames() -> None:
    """The published JSON Schema (`roomscribe schema`), read by a real validator, names what is wrong."""
    assert json_schema_errors({"type": "session.start", "id": "s", "transport": "ws"}, "ClientMessage") == []
    assert json_schema_errors({"type": "transcript.final", "seq": 3, "utterance_id": "u", "text": "hi", "start": 0.5,
                               "end": 1.0, "reason": "silence"}, "ServerMessage") == []  # fmt: skip
    assert json_schema_errors({"type": "session.start", "audio": {"sample_rate": 12345}}, "ClientMessage") == [
        "audio/sample_rate: 12345 is not one of [8000, 16000, 24000, 32000, 44100, 48000]"
    ]
    assert json_schema_errors({"type": "vad", "speaking": "yes"}, "ClientMessage") == ["speaking: 'yes' is not of type 'boolean'"]
    missing = json_schema_errors({"type": "transcript.final", "seq": 3, "text": "hi", "start": 0.5, "end": 1.0}, "ServerMessage")
    assert missing == ["(message): 'utterance_id' is a required property", "(message): 'reason' is a required property"]
    [unknown] = json_schema_errors({"type": "session.sart"}, "ClientMessage")
    assert "is not valid under any of the given schemas" in unknown
    # A request is not a server message, and the other way round.
    assert json_schema_errors({"type": "ping"}, "ServerMessage")
    assert json_schema_errors({"type": "pong", "time": 1}, "ClientMessage")
