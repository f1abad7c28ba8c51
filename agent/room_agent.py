"""The media agent for one LiveKit room: joins hidden and subscribe-only, feeds microphone audio on.

It subscribes only to the microphone of the session's user (or of every publisher in multi-user
mode), reads `rtc.AudioStream` and hands each frame to `feed`; the pipeline resamples it with soxr.
It reports a track as heard (`on_listening`) only once the receiver's jitter buffer has settled:
until then WebRTC may time-stretch the audio (see `agent/jitter_buffer.py`), so a client that
waits for `listening` before it speaks is heard unstretched. Every frame is fed all the same.
If its connection breaks it rejoins with exponential backoff and jitter and reports the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from livekit import rtc

from agent.audio_tap import WavTap
from agent.jitter_buffer import NETEQ_RATE, JitterBufferStats, Settled, SettleWatch
from roomscribe.common.backoff import Backoff
from roomscribe.common.tasks import BackgroundTasks

log = logging.getLogger(__name__)

#: feed(identity, int16 samples, sample_rate, channels)
FeedFn = Callable[[str, np.ndarray, int, int], None]
StatusFn = Callable[[str, str], None]
#: on_listening(identity, verdict): the track is heard and its jitter buffer has settled.
ListeningFn = Callable[[str, Settled], None]
READER_DRAIN_S = 5.0
#: How often the jitter buffer's statistics are read while a new track settles.
SETTLE_POLL_S = 0.1
#: How often afterwards (for the log line on how much the audio was altered after `listening`).
STATS_LOG_POLL_S = 1.0
TrackEndedFn = Callable[[str], Coroutine[Any, Any, None]]


class RoomAgent:
    """One room's agent. `target_identity=None` transcribes every publisher (multi-user mode)."""

    def __init__(
        self,
        *,
        url: str,
        room_name: str,
        mint_token: Callable[[], str],
        target_identity: str | None,
        feed: FeedFn,
        on_status: StatusFn,
        on_track_ended: TrackEndedFn,
        on_listening: ListeningFn,
        receiving: bool = True,
        backoff: Backoff | None = None,
        debug_audio_dir: str = "",
    ) -> None:
        self.url = url
        self.room_name = room_name
        self._mint_token = mint_token
        self.target_identity = target_identity
        self._feed = feed
        self._on_status = on_status
        self._on_track_ended = on_track_ended
        self._on_listening = on_listening
        self.debug_audio_dir = debug_audio_dir
        self.receiving = receiving
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0, attempts=None)
        self.room: rtc.Room | None = None
        self._readers: dict[str, asyncio.Task[None]] = {}
        #: identity → sid of the microphone track being transcribed (for lk.transcription).
        self.track_sids: dict[str, str] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._degraded = False
        self._background = BackgroundTasks(log, "room agent task")
        self.connected = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the room (the first join's failure is raised to the caller)."""
        await self._join()

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self._leave()

    async def _join(self) -> None:
        room = rtc.Room()
        room.on("track_published", self._on_track_published)
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_gone)
        room.on("track_unpublished", lambda pub, participant: self._retire_reader(pub.sid))
        room.on("participant_disconnected", self._on_participant_left)
        room.on("disconnected", self._on_disconnected)
        room.on("reconnecting", lambda: self._status_degraded("the agent's LiveKit connection is reconnecting"))
        room.on("reconnected", self._status_recovered)
        await room.connect(self.url, self._mint_token(), rtc.RoomOptions(auto_subscribe=False))
        self.room = room
        self.connected.set()
        log.info("agent joined room %r", self.room_name)
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                self._consider(publication, participant)

    async def _leave(self) -> None:
        for sid in list(self._readers):
            self._stop_reader(sid)
        room, self.room = self.room, None
        self.connected.clear()
        if room is not None:
            try:
                await room.disconnect()
            except Exception:  # the connection may already be gone
                log.debug("agent disconnect from %r failed", self.room_name, exc_info=True)

    # -- subscriptions ------------------------------------------------------------------------------
    def _wanted(self, publication: rtc.TrackPublication, participant: rtc.RemoteParticipant) -> bool:
        if publication.kind != rtc.TrackKind.KIND_AUDIO or publication.source != rtc.TrackSource.SOURCE_MICROPHONE:
            return False
        return self.target_identity is None or participant.identity == self.target_identity

    def _consider(self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._wanted(publication, participant):
            publication.set_subscribed(self.receiving)

    async def set_receiving(self, receiving: bool) -> None:
        """Subscribe to (True) or unsubscribe from (False) the wanted microphone tracks."""
        self.receiving = receiving
        if self.room is None:
            return
        for participant in self.room.remote_participants.values():
            for publication in participant.track_publications.values():
                self._consider(publication, participant)
        if not receiving:
            for sid in list(self._readers):
                self._retire_reader(sid)

    def _on_track_published(self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        self._consider(publication, participant)

    def _on_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if not self._wanted(publication, participant) or not self.receiving:
            publication.set_subscribed(False)
            return
        if publication.sid in self._readers:
            return
        log.info("agent in %r receives %r's microphone", self.room_name, participant.identity)
        self.track_sids[participant.identity] = publication.sid
        self._readers[publication.sid] = asyncio.get_running_loop().create_task(
            self._read(track, participant.identity)
        )

    def _on_track_gone(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._retire_reader(publication.sid)

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        for publication in participant.track_publications.values():
            self._retire_reader(publication.sid)

    def _retire_reader(self, sid: str) -> None:
        """The track is going away: let its reader drain the frames already queued (the stream
        ends with EOS after them), and cancel it only if it has not ended after READER_DRAIN_S."""
        task = self._readers.pop(sid, None)
        if task is not None and not task.done():
            asyncio.get_running_loop().call_later(READER_DRAIN_S, task.cancel)

    def _stop_reader(self, sid: str) -> None:
        task = self._readers.pop(sid, None)
        if task is not None:
            task.cancel()

    async def _read(self, track: rtc.Track, identity: str) -> None:
        stream = rtc.AudioStream(track)
        tap = WavTap(self.debug_audio_dir, self.room_name, identity) if self.debug_audio_dir else None
        settle: asyncio.Task[None] | None = None
        try:
            async for event in stream:
                frame = event.frame
                samples = np.frombuffer(frame.data, dtype=np.int16)
                if settle is None:
                    settle = asyncio.get_running_loop().create_task(self._report_when_settled(track, identity))
                if tap is not None:
                    tap.write(samples, frame.sample_rate, frame.num_channels)
                self._feed(identity, samples, frame.sample_rate, frame.num_channels)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent in %r: reading %r's audio failed", self.room_name, identity)
        finally:
            if settle is not None:
                settle.cancel()
            if tap is not None:
                tap.close()
            await stream.aclose()
            # The track ended (unpublished, left, unsubscribed): settle the open utterance.
            self._background.spawn(self._on_track_ended(identity))

    async def _jitter_stats(self, track: rtc.Track, identity: str) -> JitterBufferStats | None:
        try:
            return JitterBufferStats.from_rtc(await track.get_stats())
        except Exception as exc:  # statistics are a refinement: never let them stop the audio
            log.debug("agent in %r: no stats for %r (%s)", self.room_name, identity, type(exc).__name__)
            return None

    async def _report_when_settled(self, track: rtc.Track, identity: str) -> None:
        """From the track's first frame: poll its jitter buffer until it has settled, then report
        it heard (without statistics: after the watch's limit). Then keep reading the statistics
        now and then, to log how much the audio was altered after `listening` when the track ends."""
        loop = asyncio.get_running_loop()
        watch = SettleWatch()
        verdict: Settled | None = None
        stats: JitterBufferStats | None = None
        while verdict is None:
            stats = await self._jitter_stats(track, identity)
            verdict = watch.update(stats, loop.time())
            if verdict is None:
                await asyncio.sleep(SETTLE_POLL_S)
        log.info(
            "agent in %r hears %r: jitter buffer %s after %.2f s (%.0f ms stretched, buffer %.0f ms, target %.0f ms)",
            self.room_name, identity, "settled" if verdict.steady else "NOT settled", verdict.after_s,
            verdict.stretched_ms, verdict.buffer_ms, verdict.target_ms,
        )
        self._on_listening(identity, verdict)
        if stats is None:
            return
        settled, latest = stats, stats
        try:
            while True:
                await asyncio.sleep(STATS_LOG_POLL_S)
                latest = await self._jitter_stats(track, identity) or latest
        finally:
            if latest.stretched != settled.stretched or latest.concealed != settled.concealed:
                log.info(
                    "agent in %r: %r's audio after listening: %.0f ms time-stretched, %.0f ms concealed (late or lost packets)",
                    self.room_name, identity, 1000.0 * (latest.stretched - settled.stretched) / NETEQ_RATE,
                    1000.0 * (latest.concealed - settled.concealed) / NETEQ_RATE,
                )

    async def publish_text(self, text: str, *, topic: str, attributes: dict[str, str], sender_identity: str | None) -> None:
        """Send a text stream into the room (needs a token with can_publish_data)."""
        if self.room is None:
            return
        try:
            writer = await self.room.local_participant.stream_text(
                topic=topic, attributes=attributes, sender_identity=sender_identity
            )
            await writer.write(text)
            await writer.aclose()
        except Exception as exc:
            log.warning("agent in %r could not publish text on %s: %s", self.room_name, topic, type(exc).__name__)

    # -- connection health -------------------------------------------------------------------------
    def _status_degraded(self, message: str) -> None:
        if not self._degraded:
            self._degraded = True
            self._on_status("livekit.degraded", message)

    def _status_recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            self._on_status("livekit.recovered", "the agent's LiveKit connection is back")

    def _on_disconnected(self, reason: object = None) -> None:
        if self._closed or (self._supervisor is not None and not self._supervisor.done()):
            return
        self._status_degraded(f"the agent lost its LiveKit connection ({reason}); reconnecting")
        self._supervisor = asyncio.get_running_loop().create_task(self._rejoin())

    async def _rejoin(self) -> None:
        """Rejoin with exponential backoff and jitter until it works or the agent is closed."""
        await self._leave()
        attempt = 0
        while not self._closed:
            if not self._backoff.allows(attempt):
                self._on_status("livekit.failed", "the agent could not rejoin the LiveKit room; giving up")
                return
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1
            try:
                await self._join()
            except Exception as exc:
                log.info("agent rejoin of %r failed (%s); retrying", self.room_name, type(exc).__name__)
                await self._leave()
                continue
            self._status_recovered()
            return
