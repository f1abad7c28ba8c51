"""Real server, real model, real speech, through a loopback proxy that breaks the link.

The client must reconnect, resume, resend what the server may not have received, and hand the
caller every final of the whole recording once, in order.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from control.server import ControlServer
from control_harness import ServerHandle, make_settings
from roomscribe.client.audio_files import read_wav
from roomscribe.client.control_client import ControlClient
from roomscribe.client.errors import AuthRejected
from roomscribe.client.events import ClientNotice, Event
from roomscribe.client.options import ClientOptions, ConnectionState
from roomscribe.client.sources import numpy_stream
from roomscribe.client.stream import send_stream
from roomscribe.common.backoff import Backoff
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, silence, wer

pytestmark = pytest.mark.timeout(120)

SPEED = 3.0  # faster than real time, slow enough for a loaded 2-core test machine to keep up
RATE = 16000


def recording() -> tuple[np.ndarray, float]:
    """LIBRI, a pause, JFK, a pause; and the time (s) 3 s into JFK, mid-utterance."""
    libri = read_wav(LIBRI).samples
    samples = np.concatenate([libri, silence(1.0), read_wav(JFK).samples, silence(1.0)])
    return samples, len(libri) / RATE + 1.0 + 3.0


class Recorder:
    """Every event the caller sees, in order."""

    def __init__(self, client: ControlClient) -> None:
        self.events: list[Event] = []
        client.on(self.events.append)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    def notices(self, code: str) -> list[ClientNotice]:
        return [e for e in self.events if isinstance(e, ClientNotice) and e.code == code]

    def assert_complete_transcript(self) -> None:
        seqs = [e.seq for e in self.events if e.seq is not None and e.subscription_id is None]
        assert seqs == sorted(set(seqs)), f"an event arrived twice or out of order: {seqs}"
        finals = self.of("transcript.final")
        assert len({f.raw["utterance_id"] for f in finals}) == len(finals)
        text = " ".join(f.raw["text"] for f in finals)
        assert wer(LIBRI_TEXT + " " + JFK_TEXT, text) <= 0.12, text


def fast_options(**overrides: object) -> ClientOptions:
    options = ClientOptions(backoff=Backoff(base_s=0.1, cap_s=0.4, attempts=40), ping_interval_s=0.5, dead_after_s=2.0)
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


async def test_cut_mid_utterance_then_outage_loses_and_repeats_nothing(control, proxy) -> None:
    client = ControlClient(proxy.url(), control.token("dana"), options=fast_options())
    seen = Recorder(client)
    await client.connect()
    await client.start_session(transport="ws")
    samples, cut_at_s = recording()
    outage_s = 1.5  # wall time: 4.5 s of audio at 3×, less than the 10 s buffer
    sent_s = 0.0
    during_outage: dict[str, float] = {}

    async def end_outage() -> None:
        await asyncio.sleep(outage_s)
        assert client.connection_state is not ConnectionState.CONNECTED
        during_outage["sent_s"] = sent_s - cut_at_s
        assert client._audio is not None  # the ws audio sender, made by start_session(transport="ws")
        during_outage["buffered_s"] = client._audio.buffer.pending_frames * 0.02
        proxy.refuse = False

    stream = numpy_stream(samples, RATE, speed=SPEED)
    outage: asyncio.Task[None] | None = None
    async for chunk in stream.chunks:  # a live source: send_audio never waits
        if outage is None and sent_s >= cut_at_s:
            proxy.refuse = True
            proxy.cut()
            outage = asyncio.create_task(end_outage())
        client.send_audio(chunk)
        sent_s += len(chunk) / 2 / RATE
    assert outage is not None
    await outage
    ended = await client.stop_session(timeout_s=60)
    assert ended.reason == "stopped"
    await client.close()

    seen.assert_complete_transcript()
    # Speech went on during the outage (over a second of it even on a loaded machine), all buffered.
    assert during_outage["sent_s"] >= 1.0, during_outage
    assert during_outage["buffered_s"] >= during_outage["sent_s"] - 0.1, during_outage
    assert client.stats.resumes >= 1 and client.stats.audio_frames_dropped == 0, client.stats
    assert proxy.connections >= 2 and seen.notices("session.resumed")
    assert [n.raw["state"] for n in seen.notices("connection.state")][-1] == "disconnected"


async def test_silent_link_is_detected_by_heartbeat_and_reestablished(control, proxy) -> None:
    client = ControlClient(proxy.url(), control.token("erin"))  # default heartbeat settings
    seen = Recorder(client)
    await client.connect()
    samples, silent_at_s = recording()
    await client.start_session(transport="ws")
    stream = numpy_stream(samples, RATE, speed=SPEED)
    silenced_at: list[float] = []
    detected_at: list[float] = []
    client.on(lambda e: detected_at.append(time.monotonic()) if e.raw.get("code") == "connection.dead" else None)

    sent_s = 0.0
    async for chunk in stream.chunks:  # a file: waits for the link instead of dropping audio
        if not silenced_at and sent_s >= silent_at_s:
            proxy.blackhole()
            silenced_at.append(time.monotonic())
        await client.write_audio(chunk)
        sent_s += len(chunk) / 2 / RATE
    await client.stop_session(timeout_s=60)
    await client.close()

    detection_s = detected_at[0] - silenced_at[0]
    options = client.options
    assert detection_s <= options.dead_after_s + options.ping_interval_s + 0.5, detection_s
    seen.assert_complete_transcript()
    assert client.stats.dead_links >= 1 and client.stats.resumes >= 1, client.stats
    assert proxy.connections >= 2 and client.stats.audio_frames_dropped == 0


async def test_outage_longer_than_the_grace_period_starts_a_new_session(engine, make_proxy) -> None:
    server = ControlServer(make_settings(grace_period_s=0.3), engine=engine)
    await server.start()
    proxy = await make_proxy("127.0.0.1", server.port)
    try:
        async with aiohttp.ClientSession() as http:
            handle = ServerHandle(server, http)
            client = ControlClient(proxy.url(), handle.token("fay"), options=fast_options())
            seen = Recorder(client)
            await client.connect()
            first = await client.start_session(transport="ws")
            proxy.refuse = True
            proxy.cut()
            await asyncio.sleep(1.2)  # longer than the grace period: the session is gone
            proxy.refuse = False
            stream = numpy_stream(np.concatenate([read_wav(LIBRI).samples, silence(1.0)]), RATE, speed=0)
            await send_stream(client, stream)
            await client.stop_session(timeout_s=60)
            await client.close()
    finally:
        await server.stop()
    restarted = seen.notices("session.restarted")
    assert restarted and restarted[0].raw["lost_session_id"] == first.session_id
    assert client.session_id != first.session_id and client.stats.sessions_restarted == 1
    finals = seen.of("transcript.final")
    assert wer(LIBRI_TEXT, " ".join(f.raw["text"] for f in finals)) <= 0.10


async def test_a_refused_token_fails_at_once_without_retrying(control) -> None:
    client = ControlClient(control.server.url, "not-a-token", options=fast_options())
    started = time.monotonic()
    with pytest.raises(AuthRejected):
        await client.connect(retry=True)
    assert time.monotonic() - started < 2.0
    await client.close()
