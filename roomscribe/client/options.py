"""Client settings, connection/session states and counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from roomscribe.common.audio import CLIENT_AUDIO_BUFFER_S
from roomscribe.common.backoff import Backoff


class ConnectionState(str, Enum):
    """The control socket, independent of the session it carries."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSING = "closing"


class SessionState(str, Enum):
    """The transcription session, which outlives a dropped socket (the server keeps it for a grace period)."""

    NONE = "none"
    STARTING = "starting"
    ACTIVE = "active"
    RESUMING = "resuming"
    STOPPING = "stopping"
    ENDED = "ended"


@dataclass
class ClientOptions:
    """How the client reconnects, detects a dead link and buffers audio."""

    backoff: Backoff = field(default_factory=Backoff)
    #: A `ping` goes out this often; a link that has delivered nothing for `dead_after_s` is dropped.
    ping_interval_s: float = 1.0
    dead_after_s: float = 3.5
    #: While audio flows, a ping (whose pong confirms the audio before it) after this much audio.
    #: It bounds what a dropped link can make ambiguous: audio the server may have received but
    #: not confirmed, which is sent again after the resume.
    ack_every_ms: int = 100
    #: At most this much audio is on the wire unconfirmed; more waits in the buffer. A dropped
    #: link can make only this much ambiguous (the server may have received it): it is sent again
    #: after the resume, so at worst this much audio is repeated, and none is lost.
    max_unconfirmed_ms: int = 400
    #: Most audio kept for resending (unsent plus unconfirmed); past it the oldest is dropped.
    audio_buffer_s: float = CLIENT_AUDIO_BUFFER_S
    #: Audio is split into frames of this length before buffering and sending.
    frame_ms: int = 20
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 15.0
    #: When a resume is refused (grace period over) or the server lost the session (`session.ended
    #: {reason: "lost"}`), start a new session and carry on sending.
    restart_lost_session: bool = True
    #: ... and while the server answers that start `server.busy`, keep asking (after its `retry_after`) this long.
    restart_busy_s: float = 30.0


@dataclass
class ClientStats:
    connects: int = 0
    reconnects: int = 0
    dead_links: int = 0
    resumes: int = 0
    sessions_restarted: int = 0
    duplicates_dropped: int = 0
    frames_resent: int = 0
    audio_frames_dropped: int = 0
    audio_seconds_dropped: float = 0.0
