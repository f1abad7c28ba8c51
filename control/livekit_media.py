"""The LiveKit transport: credentials for the client, the room agent, publish gating, room cleanup.

`LiveKitTransport` is the session manager's MediaTransport for LiveKit. Each session's
`LiveKitSessionMedia` mints the client's publish-only token, starts a `RoomAgent` that feeds the
session's pipeline(s), pushes a fresh token a minute before the current one expires, and gates
publishing on voice activity when `ROOMSCRIBE_PUBLISH_GATING=vad`. Each session's agent has its own
identity, so two sessions in one (multi-user) room do not push each other out. When the session ends
its agent leaves, and once no other session of this server uses the room it is deleted: a
single-user room always (it is the server's), a multi-user room only when nobody else is left in it
(the people in it are the app's, not ours to disconnect).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from livekit import api

from agent.events import FinalTranscript, InterimTranscript, PipelineEvent, SpeechStarted
from agent.jitter_buffer import Settled
from agent.room_agent import RoomAgent
from control.config import Settings
from control.media import AudioSocket, ReadyMedia, SessionMedia, SessionPipeline
from control.room_users import RoomUsers
from control.schema import LiveKitCredentials, ProtocolError, PublishStart, PublishStop, Token
from control.session import EventFactory, Session, SessionOptions
from roomscribe.common.tasks import BackgroundTasks
from tokens import IssuedToken, mint_agent_token, mint_client_token

log = logging.getLogger(__name__)

#: Every agent's identity starts so; the session id follows (`roomscribe-agent-s_…`).
AGENT_IDENTITY_PREFIX = "roomscribe-agent-"
TOKEN_PUSH_LEAD_S = 60.0
#: LiveKit's text-stream topic and attributes for transcriptions (what its front-end components read).
TRANSCRIPTION_TOPIC = "lk.transcription"


class LiveKitSession(Protocol):
    """What LiveKitSessionMedia uses of its session: a `Session` in one process, a worker's
    `RoomPipelines` in a cluster (agent/worker_livekit.py)."""

    id: str
    user: str
    room: str
    options: SessionOptions
    ended: bool

    def pipeline(self, participant: str | None = None) -> SessionPipeline: ...
    async def finish_speech(self, participant: str | None = None) -> None: ...
    async def finish_all(self, timeout_s: float | None = None) -> bool: ...
    def emit(self, event: EventFactory | dict[str, Any]) -> int: ...
    def count_audio(self, seconds: float) -> None: ...


def agent_identity(session_id: str) -> str:
    """The LiveKit identity of one session's agent (joined hidden, with kind `agent`)."""
    return AGENT_IDENTITY_PREFIX + session_id


def http_url(ws_url: str) -> str:
    """The RoomService (Twirp) base URL for a LiveKit signalling URL."""
    return ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


class LiveKitSessionMedia(SessionMedia):
    """A LiveKit session's media state: its agent, credentials, token timer and publish gate."""

    def __init__(self, backend: LiveKitTransport, session: LiveKitSession) -> None:
        self.backend = backend
        self.session = session
        #: The agent's LiveKit identity (a cluster's replacement worker uses its own: see agent/worker_livekit.py).
        self.identity = agent_identity(session.id)
        self.agent: RoomAgent | None = None
        #: The `livekit` object of session.ready (set by open).
        self.credentials: LiveKitCredentials | None = None
        self.token_expires_at = 0
        self._token_timer: asyncio.Task[None] | None = None
        self._hangover: asyncio.Task[None] | None = None
        self._inactivity: asyncio.Task[None] | None = None
        self.publishing = False
        self.gating = backend.settings.publish_gating
        self._background = BackgroundTasks(log, "LiveKit session task")

    # -- lifecycle ------------------------------------------------------------------------------------
    async def open(self) -> ReadyMedia:
        """Start the room agent and mint the client's token; livekit.unavailable if the agent cannot join."""
        try:
            await self.join()
            issued = self.new_client_token()
        except Exception as exc:
            log.exception("session %s: could not open LiveKit media", self.session.id)
            raise ProtocolError("livekit.unavailable", f"could not join the LiveKit room: {type(exc).__name__}") from None
        self.credentials = LiveKitCredentials(
            url=self.backend.url,
            room=self.session.room,
            identity=self.session.user,
            token=issued.token,
            expires_at=issued.expires_at,
            publish_gating="vad" if self.gating == "vad" else "always",
        )
        return ReadyMedia(livekit=self.credentials)

    async def join(self) -> None:
        """The session's agent joins its room (on a cluster's worker: all that opening is there)."""
        await self.backend.rooms.acquire(self.session.room, self.session.id)
        await self._start_agent()

    async def _start_agent(self) -> None:
        session, settings = self.session, self.backend.settings
        self.agent = RoomAgent(
            url=self.backend.url,
            room_name=session.room,
            mint_token=lambda: mint_agent_token(
                settings.livekit_api_key,
                settings.livekit_api_secret,
                identity=self.identity,
                room=session.room,
                ttl_s=settings.agent_token_ttl_s,
                can_publish_data=settings.publish_transcripts,
            ).token,
            target_identity=None if session.options.multi_user else session.user,
            feed=self.feed,
            on_status=self.status,
            on_track_ended=self.track_ended,
            on_listening=self.listening,
            receiving=settings.publish_gating == "always",
            debug_audio_dir=settings.debug_audio_dir,
        )
        await self.agent.start()

    async def resume(self) -> ReadyMedia:
        """A resumed client gets fresh credentials; old tokens are not replayed."""
        if self.credentials is not None:
            fresh = self.new_client_token()
            self.credentials = msgspec.structs.replace(self.credentials, token=fresh.token, expires_at=fresh.expires_at)
        return ReadyMedia(livekit=self.credentials)

    def accept_audio(self, data: bytes, socket: AudioSocket) -> None:
        """Audio comes through the room, never the control socket."""
        socket.send_error(
            ProtocolError("audio.wrong_transport", "this session receives audio over LiveKit, not the control socket")
        )

    async def close(self) -> None:
        """Stop the timers, let the agent leave, and delete the room unless another session uses it."""
        await self._stop(self._delete_room)

    async def leave(self) -> None:
        """Stop the timers and let the agent leave; the room stays (a cluster's session moving to
        another worker goes on in it)."""
        await self._stop(_keep_room)

    async def _stop(self, after_last: Callable[[], Awaitable[None]]) -> None:
        for task in (self._token_timer, self._hangover, self._inactivity):
            if task is not None:
                task.cancel()
        if self.agent is not None:
            await self.agent.close()
            self.agent = None
        await self.backend.rooms.release(self.session.room, self.session.id, after_last)

    async def _delete_room(self) -> None:
        """A single-user room goes; a multi-user room only when no one but this agent is left in it."""
        besides = self.identity if self.session.options.multi_user else None
        await self.backend.delete_room(self.session.room, unless_occupied_besides=besides)

    # -- credentials ------------------------------------------------------------------------------
    async def refresh_credentials(self) -> IssuedToken:
        return self.new_client_token()

    def new_client_token(self) -> IssuedToken:
        settings = self.backend.settings
        issued = mint_client_token(
            settings.livekit_api_key,
            settings.livekit_api_secret,
            identity=self.session.user,
            room=self.session.room,
            ttl_s=settings.client_token_ttl_s,
        )
        self.token_expires_at = issued.expires_at
        self._schedule_token_push()
        return issued

    def _schedule_token_push(self) -> None:
        if self._token_timer is not None:
            self._token_timer.cancel()
        delay = max(1.0, self.token_expires_at - time.time() - TOKEN_PUSH_LEAD_S)
        self._token_timer = asyncio.get_running_loop().create_task(self._push_token_after(delay))

    async def _push_token_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._token_timer = None
        fresh = self.new_client_token()
        self.session.emit(lambda seq: Token(seq=seq, token=fresh.token, expires_at=fresh.expires_at))

    # -- publish gating -----------------------------------------------------------------------------
    async def ready(self) -> None:
        """After session.ready: say whether to publish now."""
        if self.gating == "always":
            await self._start_publishing("always")

    async def continue_publishing(self) -> None:
        """The session moved to this agent (a cluster's worker died): its client may be publishing
        already, so receive as if it were (no publish.start: the client heard it before)."""
        self.publishing = True
        if self.agent is not None:
            await self.agent.set_receiving(True)
        if self.gating == "vad":
            self._arm_inactivity()

    async def on_client_vad(self, speaking: bool) -> None:
        """The client's own VAD: start publishing on speech; stop after the hangover."""
        if self.gating != "vad":
            return
        if speaking:
            if self._hangover is not None:
                self._hangover.cancel()
                self._hangover = None
            if not self.publishing:
                await self._start_publishing("vad")
            self._arm_inactivity()
        elif self.publishing and self._hangover is None:
            self._hangover = asyncio.get_running_loop().create_task(self._stop_after_hangover())

    async def _start_publishing(self, reason: str) -> None:
        self.publishing = True
        if self.agent is not None:
            await self.agent.set_receiving(True)
        self.session.emit(lambda seq: PublishStart(seq=seq, reason=reason))
        if self.gating == "vad":
            self._arm_inactivity()

    async def _stop_publishing(self, reason: str) -> None:
        if not self.publishing:
            return
        self.publishing = False
        for task in (self._hangover, self._inactivity):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._hangover = self._inactivity = None
        await self.session.finish_all()  # the utterance is settled before the client stops
        if self.agent is not None:
            await self.agent.set_receiving(False)
        self.session.emit(lambda seq: PublishStop(seq=seq, reason=reason))

    async def _stop_after_hangover(self) -> None:
        await asyncio.sleep(self.backend.settings.publish_hangover_s)
        await self._stop_publishing("vad")

    def _arm_inactivity(self) -> None:
        if self._inactivity is not None:
            self._inactivity.cancel()
        self._inactivity = asyncio.get_running_loop().create_task(self._stop_when_inactive())

    async def _stop_when_inactive(self) -> None:
        await asyncio.sleep(self.backend.settings.publish_inactivity_s)
        await self._stop_publishing("inactivity")

    def observe(self, event: PipelineEvent) -> None:
        """Server-side speech keeps a gated session publishing; transcripts may go into the room."""
        if self.gating == "vad" and self.publishing and isinstance(event, (SpeechStarted, InterimTranscript)):
            self._arm_inactivity()
        if self.backend.settings.publish_transcripts and isinstance(event, (InterimTranscript, FinalTranscript)):
            self._background.spawn(self._publish_transcript(event))

    async def _publish_transcript(self, event: InterimTranscript | FinalTranscript) -> None:
        if self.agent is None or not event.text:
            return
        identity = event.participant or self.session.user
        attributes = {
            "lk.segment_id": f"{self.session.id}-{event.utterance_id}",
            "lk.transcription_final": "true" if isinstance(event, FinalTranscript) else "false",
        }
        track_sid = self.agent.track_sids.get(identity)
        if track_sid:
            attributes["lk.transcribed_track_id"] = track_sid
        await self.agent.publish_text(event.text, topic=TRANSCRIPTION_TOPIC, attributes=attributes, sender_identity=identity)

    # -- agent callbacks ------------------------------------------------------------------------------
    def feed(self, identity: str, samples: Any, sample_rate: int, channels: int) -> None:
        participant = identity if self.session.options.multi_user else None
        self.session.count_audio(len(samples) / (sample_rate * channels))
        self.session.pipeline(participant).feed(samples, sample_rate, channels)

    def listening(self, identity: str, settled: Settled) -> None:
        """The agent hears `identity`'s track and its jitter buffer has settled (see RoomAgent)."""
        self.status(
            "listening",
            f"the agent hears {identity}'s microphone",
            participant=identity,
            steady=settled.steady,
            settle_ms=round(settled.after_s * 1000),
        )

    async def track_ended(self, identity: str) -> None:
        participant = identity if self.session.options.multi_user else None
        if not self.session.ended:
            await self.session.finish_speech(participant)

    def status(self, code: str, message: str, **details: Any) -> None:
        if not self.session.ended:
            self.session.emit({"type": "status", "code": code, "message": message, **details})


async def _keep_room() -> None:
    """The room outlives this agent (see LiveKitSessionMedia.leave)."""


class LiveKitTransport:
    """MediaTransport for LiveKit (a real server, LiveKit Cloud, or the embedded dev server)."""

    takes_audio_format = False
    multi_user = True

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        #: Which sessions use which room; a room is deleted when its last session ends.
        self.rooms = RoomUsers()

    def session_media(self, session: Session) -> LiveKitSessionMedia:
        return LiveKitSessionMedia(self, session)

    async def delete_room(self, room: str, *, unless_occupied_besides: str | None = None) -> None:
        """Delete the room through the RoomService (works on LiveKit and the dev server); with
        `unless_occupied_besides` (the agent that just left), only when no one else is in it."""
        try:
            async with api.LiveKitAPI(http_url(self.url), self.settings.livekit_api_key, self.settings.livekit_api_secret) as lk:
                if unless_occupied_besides is not None:
                    listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                    others = [p for p in listing.participants if p.identity != unless_occupied_besides]
                    if others:
                        log.info("room %r kept: %d participant(s) still in it", room, len(others))
                        return
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            log.info("room %r deleted", room)
        except Exception as exc:
            log.warning("could not delete room %r: %s", room, type(exc).__name__)
