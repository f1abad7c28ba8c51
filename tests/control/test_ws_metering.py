"""ws audio metering: a flooding client is held back (backpressure), every final of the audio the
server took is delivered, and another user's real-time session is not held at all."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from control.session import Session, SessionManager, SessionOptions
from control.ws_media import WsSessionMedia, WsTransport
from control_harness import RawClient, serving
from roomscribe.client import ControlClient, FinalTranscript, numpy_stream
from roomscribe.client.audio_files import read_wav
from roomscribe.client.stream import send_stream
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, pcm_frames, silence, wer

pytestmark = pytest.mark.timeout(180)


# -- the backlog hold, without sockets --------------------------------------------------------------
class Backlog:
    """The queued finals' audio a stand-in pipeline reports; `polled` is set each time it is asked."""

    def __init__(self) -> None:
        self.audio_s = 0.0
        self.polls = 0
        self.polled = asyncio.Event()


class BacklogPipeline:
    """A stand-in pipeline whose queued finals are `backlog`'s."""

    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog

    def queued_final_audio_s(self) -> float:
        self.backlog.polls += 1
        self.backlog.polled.set()
        return self.backlog.audio_s

    def feed(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        pass

    async def finish(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_audio_waits_while_the_sessions_queued_finals_exceed_the_bound() -> None:
    backlog = Backlog()
    manager = SessionManager(
        pipeline_factory=lambda on_event, participant, options: BacklogPipeline(backlog),
        grace_period_s=5.0,
        transports={"ws": WsTransport(max_backlog_s=10.0)},
    )
    session: Session = await manager.start("alice", SessionOptions("ws", None, True, False), outbox=_NoOutbox())
    media = session.media
    assert isinstance(media, WsSessionMedia)
    await media.pace(640)  # nothing queued: at once
    backlog.audio_s = 12.0
    held = asyncio.ensure_future(media.pace(640))
    while backlog.polls < 3:  # the frame is held and the backlog checked again and again
        backlog.polled.clear()
        await backlog.polled.wait()
    assert not held.done()
    backlog.audio_s = 4.0
    await asyncio.wait_for(held, 5)
    assert media.backlog_held_s > 0


class _NoOutbox:
    def send_message(self, message: Any, *, droppable: bool = False, force: bool = False) -> None:
        pass

    def send_bytes(self, data: bytes) -> None:
        pass


# -- on a real server -------------------------------------------------------------------------------
RATE = 3.0  # × real time after the burst (the server's default is 1.5; a faster rate keeps the test short)
BURST_S = 2.0


def speech(*clips: Any) -> np.ndarray:
    """The clips, each followed by 1 s of silence (which ends its utterance)."""
    return np.concatenate([part for clip in clips for part in (read_wav(clip).samples, silence(1.0))])


def ws_media(handle: Any, session_id: str) -> WsSessionMedia:
    media = handle.server.manager.sessions[session_id].media
    assert isinstance(media, WsSessionMedia)
    return media


async def flood(client: RawClient, frames: list[bytes]) -> float:
    """Send every frame as fast as the socket takes it, then a ping; wall seconds until its pong
    (the server answers it only after it has taken every frame before it)."""
    started = time.monotonic()
    for frame in frames:
        await client.ws.send_bytes(frame)
    await client.send(type="ping", id="flooded")
    await client.wait_type("pong", id="flooded", timeout=120)
    return time.monotonic() - started


async def real_time(client: RawClient, frames: list[bytes], frame_s: float = 0.02) -> None:
    """Send the frames at real-time pace (never ahead of the clock)."""
    started = time.monotonic()
    for i, frame in enumerate(frames):
        delay = started + i * frame_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.ws.send_bytes(frame)


async def test_a_flooding_client_is_held_to_the_rate_and_another_user_is_served(engine) -> None:
    async with serving(engine, ws_audio_rate=RATE, ws_audio_burst_s=BURST_S) as handle:
        flooder = await handle.connect("flooder")
        listener = await handle.connect("listener")
        for client in (flooder, listener):
            await client.send(type="session.start", id="s", transport="ws", interim=False)
        flood_ready = await flooder.wait_type("session.ready", id="s")
        listen_ready = await listener.wait_type("session.ready", id="s")

        flood_audio = speech(LIBRI, JFK, LIBRI)  # 23.8 s
        flood_frames = pcm_frames(flood_audio)
        listen_frames = pcm_frames(speech(JFK))
        flood_wall, _ = await asyncio.gather(flood(flooder, flood_frames), real_time(listener, listen_frames))

        # Backpressure: past the burst the server took the flood at no more than RATE× real time.
        flood_s = len(flood_audio) / 16000
        assert flood_wall >= (flood_s - BURST_S) / RATE * 0.95, flood_wall
        flood_media = ws_media(handle, flood_ready["session_id"])
        assert flood_media.meter.held_frames > 0
        assert flood_media.bytes_received == sum(len(f) for f in flood_frames), "every frame was taken"
        assert not flooder.of_type("error")
        # The real-time client was never held.
        assert ws_media(handle, listen_ready["session_id"]).meter.held_frames == 0

        for client in (flooder, listener):
            await client.send(type="session.stop", id="stop")
        for client in (flooder, listener):
            await client.wait_type("session.ended", reason="stopped", timeout=120)

        # Every final of the audio the server took was delivered: the whole flood's text is there.
        flood_text = " ".join(f["text"] for f in flooder.of_type("transcript.final"))
        assert wer(f"{LIBRI_TEXT} {JFK_TEXT} {LIBRI_TEXT}", flood_text) <= 0.15, flood_text
        listen_text = " ".join(f["text"] for f in listener.of_type("transcript.final"))
        assert wer(JFK_TEXT, listen_text) <= 0.10, listen_text
        assert not listener.of_type("error")


async def test_the_client_library_streams_a_file_through_backpressure_without_losing_the_link(engine) -> None:
    """`ControlClient.write_audio` of a file as fast as the server takes it: held to the rate (its pongs
    come at the server's pace), with no dead link, no reconnect and nothing dropped."""
    async with serving(engine, ws_audio_burst_s=BURST_S) as handle:  # the default rate, 1.5× real time
        client = ControlClient(handle.server.url, handle.token("file"))
        finals: list[str] = []
        client.on(lambda event: finals.append(event.text) if isinstance(event, FinalTranscript) else None)
        await client.connect()
        ready = await client.start_session(transport="ws", interim=False)
        audio = speech(JFK)
        started = time.monotonic()
        await send_stream(client, numpy_stream(audio, 16000, speed=0))
        await client.flush(timeout_s=60)
        wall = time.monotonic() - started
        media = ws_media(handle, ready.session_id)
        assert wall >= (len(audio) / 16000 - BURST_S) / 1.5 * 0.95, wall
        assert media.meter.held_frames > 0 and media.bytes_received == 2 * len(audio)
        await client.stop_session(timeout_s=60)
        await client.close()
    assert client.stats.dead_links == 0 and client.stats.reconnects == 0
    assert client.stats.audio_frames_dropped == 0
    assert wer(JFK_TEXT, " ".join(finals)) <= 0.10
