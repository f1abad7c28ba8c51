"""While a slow request is handled the socket is still read: pings are answered at once, anything
else waits its turn. Real server on loopback, real model, real speech."""

from __future__ import annotations

import pytest

from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, pcm_frames

pytestmark = pytest.mark.timeout(120)


async def test_a_ping_during_session_stop_is_answered_at_once_and_a_start_waits_its_turn(control) -> None:
    client = await control.connect("pia")
    await client.send(type="session.start", id="s", transport="ws")
    await client.wait_type("session.ready", id="s")
    for frame in pcm_frames(read_wav(JFK).samples):  # no trailing silence: the stop finalises the utterance
        await client.ws.send_bytes(frame)
    await client.wait_type("speech.start")
    await client.send(type="session.stop", id="stop")
    await client.send(type="ping", id="p")
    await client.send(type="session.start", id="again", transport="ws")
    ended = await client.wait_type("session.ended")
    again = await client.wait_type("session.ready", id="again")
    pong = await client.wait_type("pong", id="p")
    final = client.of_type("transcript.final")[-1]
    events = client.events
    # The stop finalised the utterance (its final, then session.ended) while the ping was answered.
    assert events.index(pong) < events.index(final) < events.index(ended) < events.index(again)
    await client.close()
