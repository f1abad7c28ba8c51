"""LiveKit transport: publish a `PcmStream` as the session's microphone with the `livekit` SDK.

Create the publisher *before* `start_session(transport="livekit")` so it sees `session.ready`
and the first `publish.start`. It joins the room announced in `session.ready.livekit`, publishes
the track on `publish.start` and unpublishes it on `publish.stop`, keeps the newest LiveKit token
from `token` events (asking for one with `token.refresh` when it is about to expire), and rejoins
with that token if the room connection drops. The SDK paces capture in real time.

Audio published before the agent has subscribed is not heard (as with any LiveKit server), so a
file is preceded by silence until the server reports `status {code: "listening"}` (at most
`lead_in_max_s`); a live source just starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from livekit import rtc

from roomscribe.client.control_client import ControlClient
from roomscribe.client.errors import ClientError
from roomscribe.client.events import Event, PublishStart, PublishStop, SessionReady, Status, Token
from roomscribe.client.publish_loop import PublishLoop
from roomscribe.client.sources import PcmStream

log = logging.getLogger(__name__)

#: Ask for a fresh token when the current one has less than this left and none was pushed.
REFRESH_LEAD_S = 30.0


class LiveKitPublisher:
    """Follows one ControlClient's LiveKit session; `await publish(stream)` sends the audio."""

    def __init__(
        self,
        client: ControlClient,
        *,
        track_name: str = "microphone",
        queue_size_ms: int = 20,
        lead_in_max_s: float = 6.0,
    ) -> None:
        self.client = client
        self.track_name = track_name
        self.queue_size_ms = queue_size_ms
        self.lead_in_max_s = lead_in_max_s
        self.url: str | None = None
        self.token: str | None = None
        self.expires_at = 0.0
        self.room: rtc.Room | None = None
        self.frames_skipped = 0
        self._wanted = asyncio.Event()
        self._heard = asyncio.Event()
        self._loop: PublishLoop | None = None
        self._publication: rtc.LocalTrackPublication | None = None
        self._gate_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remove = client.on(self._on_event)  # `_on_event` picks the messages it needs by class

    @property
    def frames_published(self) -> int:
        """Audio chunks captured so far (the lead-in's silence not counted)."""
        return self._loop.frames_captured if self._loop is not None else 0

    # -- control events --------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, SessionReady) and event.livekit is not None:
            self._take_token(event.livekit.token, event.livekit.expires_at, event.livekit.url)
        elif isinstance(event, Token):
            self._take_token(event.token, event.expires_at)
        elif isinstance(event, PublishStart):
            self._wanted.set()
            self._spawn(self._apply_gate())
        elif isinstance(event, PublishStop):
            self._wanted.clear()
            self._spawn(self._apply_gate())
        elif isinstance(event, Status) and event.code == "listening":
            self._heard.set()

    def _take_token(self, token: str, expires_at: float, url: str | None = None) -> None:
        """Keep the token that expires last (a resumed session.ready may carry an older one)."""
        if url is not None:
            self.url = url
        if expires_at >= self.expires_at:
            self.token, self.expires_at = token, float(expires_at)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- room ---------------------------------------------------------------------------------------
    async def _join(self, sample_rate: int, channels: int) -> None:
        if self.url is None or self.token is None:
            raise ClientError("no LiveKit credentials: start a session with transport='livekit' first")
        room = rtc.Room()
        await room.connect(self.url, self.token, rtc.RoomOptions(auto_subscribe=False))
        self.room = room
        if self._loop is None:
            self._loop = PublishLoop(sample_rate, channels, queue_size_ms=self.queue_size_ms, track_name=self.track_name)
        self._publication = None
        await self._apply_gate()

    async def _apply_gate(self) -> None:
        """Publish or unpublish the track to match the last publish.start / publish.stop."""
        async with self._gate_lock:
            room, loop = self.room, self._loop
            if room is None or loop is None or not room.isconnected():
                return
            if self._wanted.is_set() and self._publication is None:
                self._publication = await loop.publish_to(room)
            elif not self._wanted.is_set() and self._publication is not None:
                await room.local_participant.unpublish_track(self._publication.sid)
                self._publication = None

    async def _keep_token_fresh(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            if self.expires_at and self.expires_at - time.time() < REFRESH_LEAD_S:
                with contextlib.suppress(ClientError, asyncio.TimeoutError):
                    await self.client.refresh_token()

    # -- audio ---------------------------------------------------------------------------------------
    async def publish(self, stream: PcmStream) -> None:
        """Publish every chunk of `stream` (a file waits for publish.start; a live source skips audio meanwhile)."""
        await self._join(stream.sample_rate, stream.channels)
        refresher = asyncio.create_task(self._keep_token_fresh())
        try:
            if not stream.live:  # a file: silence until the agent hears the track (or lead_in_max_s)
                await self._wanted.wait()
                await self._apply_gate()
            assert self._loop is not None
            lead_in_max_s = 0.0 if stream.live else self.lead_in_max_s
            await self._loop.run(self._gated(stream), self._heard, lead_in_max_s=lead_in_max_s)
        finally:
            refresher.cancel()

    async def _gated(self, stream: PcmStream) -> AsyncIterator[bytes]:
        """`stream`'s chunks while publish.start holds (rejoining a dropped room first)."""
        async for chunk in stream.chunks:
            if not self._wanted.is_set():
                if stream.live:
                    self.frames_skipped += 1
                    continue
                await self._wanted.wait()
            if self.room is None or not self.room.isconnected():
                log.info("LiveKit room connection lost; rejoining with the newest token")
                await self._join(stream.sample_rate, stream.channels)
            await self._apply_gate()
            yield chunk

    async def close(self) -> None:
        """Leave the room and stop following the client."""
        self._remove()
        for task in list(self._tasks):
            task.cancel()
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.disconnect()
            self.room = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                await self._loop.aclose()
