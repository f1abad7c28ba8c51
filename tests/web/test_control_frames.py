"""The web tests' check of the page's control frames bites (no browser needed)."""

from __future__ import annotations

import json

import pytest

from browser_support import ControlFrames


@pytest.mark.timeout(10)
def test_frames_outside_the_schema_are_reported_both_ways() -> None:
    frames = ControlFrames()
    frames._sent('{"type": "session.start", "id": 1, "transport": "ws", "interim": false}')  # valid
    frames._received(json.dumps({"type": "pong", "id": 1, "time": 1.0}))  # valid
    assert frames.off_schema == [] and (frames.sent, frames.received) == (1, 1)
    frames._sent('{"type": "session.start", "interm": false}')  # a misspelt option
    frames._sent('{"type": "session.sart"}')  # an unknown type
    frames._received(json.dumps({"type": "pong", "id": 1}))  # a required field missing
    frames._sent(b"\x00\x01")  # audio: not a control message, not checked
    assert len(frames.off_schema) == 3, frames.off_schema
    assert "interm" in frames.off_schema[0] and "unknown_type" in frames.off_schema[1]
