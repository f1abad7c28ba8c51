"""The control protocol's wire schema: every message of both directions, defined once.

Client → server requests are `Request` structs and server → client messages `ServerMessage`
structs, each tagged by its `type` field. `decode_request` decodes and validates a text frame in
one step and turns every failure into a coded `ProtocolError`; `encode` writes any message;
`decode_server_message` reads one on the client. Unknown fields are ignored in both directions,
so either side may add fields without breaking the other. `json_schema()` is what `roomscribe
schema` prints, and docs/protocol.md's tables are generated from this module
(`python -m control.schema_docs`). Pure: no I/O, and nothing from the pipeline (control/protocol.py
maps pipeline events onto these structs).
"""

from __future__ import annotations

import operator
import re
from functools import reduce
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta, Struct

from roomscribe.common.languages import LANGUAGE_CHOICES, TASKS

ProtocolVersion = Literal[1]
PROTOCOL_VERSION: int = get_args(ProtocolVersion)[0]
MAX_TEXT_MESSAGE_BYTES = 64 * 1024

# WebSocket close codes the server uses besides the standard ones (docs/protocol.md: close codes).
CLOSE_TRY_AGAIN_LATER = 1013  # over a socket cap (after `error limit.*`)
CLOSE_TOKEN_EXPIRED = 4001  # the control token expired and no `auth.refresh` came
CLOSE_START_TIMEOUT = 4008  # neither `session.start` nor `subscribe` in time
CLOSE_SLOW_CONSUMER = 4009  # the client read too slowly; its session waits for a resume

Transport = Literal["livekit", "ws"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)
Encoding = Literal["pcm_s16le"]
ENCODING: str = get_args(Encoding)[0]
SampleRate = Literal[8000, 16000, 24000, 32000, 44100, 48000]
SUPPORTED_SAMPLE_RATES: tuple[int, ...] = get_args(SampleRate)
Channels = Literal[1, 2]
SUPPORTED_CHANNELS: tuple[int, ...] = get_args(Channels)
if TYPE_CHECKING:
    Language = str
    Task = str
else:  # the literals are derived from roomscribe/common/languages.py
    Language = Literal[LANGUAGE_CHOICES]
    Task = Literal[TASKS]
#: Request ids are strings or integers; a reply echoes its request's id.
RequestId = str | int
NonEmpty = Annotated[str, Meta(min_length=1)]

#: Every error code the server sends, with its meaning (docs/protocol.md's error table).
ERROR_CODES: dict[str, str] = {
    "bad_json": "a text frame is not JSON",
    "bad_message": "not an object, no `type`, or a bad `id`",
    "unknown_type": "a `type` this server does not know",
    "message_too_large": "a text frame over 64 KiB",
    "bad_request": "a known request with a wrong field",
    "protocol.unsupported_version": f"`session.start.protocol` is not {PROTOCOL_VERSION}",
    "session.already_started": "`session.start` on a socket that has a session",
    "session.none": "a request that needs a session, before `session.start`",
    "session.not_found": "resume of a session that is unknown, another user's, or past its grace period",
    "transport.not_allowed": "the transport is not enabled here (not in `hello.transports`)",
    "transport.unavailable": "the LiveKit transport is not set up on this server",
    "livekit.unavailable": "the agent could not join the session's LiveKit room (the session was not started; "
    'try again, or use `"transport": "ws"`)',
    "not_allowed": "the control token lacks the claim the request needs",
    "room.not_allowed": "a multi-user `room` in the single-user namespace (`roomscribe-u-…`), or not in the "
    "token's `rooms` claim (when it has one)",
    "subscription.not_found": "`unsubscribe` of a subscription this socket does not hold",
    "audio.no_session": "a binary frame before `session.start` (not used)",
    "audio.wrong_transport": "a binary frame in a LiveKit session (not used)",
    "audio.session_moved": "a binary frame on a socket whose session was resumed on another socket (not used)",
    "audio.unsupported_format": "`session.start.audio` names a format the server does not take",
    "audio.odd_length": "a frame did not end on a sample boundary: the trailing bytes are kept and joined to "
    "the next frame, so nothing is lost",
    "audio.frame_too_large": "a frame over 1 s was refused whole (the message says how many bytes)",
    "session.moved": "`session.stop`, `vad` or `token.refresh` on a socket whose session was resumed on another "
    "socket (the request was not used; send it on the socket that holds the session)",
    "auth.invalid_token": "`auth.refresh` with a token that does not verify (the message says why: expired, bad "
    "signature, not a control token); the socket keeps its current token",
    "auth.wrong_user": "`auth.refresh` with a valid control token of another user; the socket keeps its current token",
    "auth.expired": "a request other than `auth.refresh` or `ping` after `auth.expired`: send a fresh token first",
    "internal_error": "the server failed while handling the request (a bug, logged on the server); the socket and "
    "session go on",
    "limit.sessions": "`session.start` while the server holds its most sessions (`ROOMSCRIBE_MAX_SESSIONS`); "
    "the socket stays open: try again after `retry_after`",
    "limit.sockets": "a control socket over the server's limit (`ROOMSCRIBE_MAX_SOCKETS`): sent instead of "
    "`hello`, then close code 1013; try again after `retry_after`",
    "limit.sockets_per_user": "a control socket over its user's limit (`ROOMSCRIBE_MAX_SOCKETS_PER_USER`): sent "
    "instead of `hello`, then close code 1013",
    "limit.subscriptions": "`subscribe` on a socket that holds its most subscriptions "
    "(`ROOMSCRIBE_MAX_SUBSCRIPTIONS_PER_SOCKET`); `unsubscribe` first",
    "server.busy": "`session.start` while no transcription worker has room (cluster mode): the socket stays open; "
    "try again after `retry_after`",
    "cluster.unavailable": "`session.start` or a resume while the cluster's Redis cannot be reached (cluster mode); "
    "try again after `retry_after`",
    "language.unknown": '`session.start.language` is not "auto" or a Whisper language code (docs/protocol.md: Languages)',
    "language.unsupported": "the model cannot serve the session's `language` or `task`: an English-only model (`tiny.en`) "
    'takes only `"en"` and `"transcribe"`, no `"auto"` or `"translate"` (in a cluster: no worker\'s model can)',
    "prompt.too_long": "`session.start` with `keyterms` and `prompt` over their bounds: at most 100 keyterms of "
    "at most 50 characters, a prompt of at most 1000 characters, and together at most 223 tokens (the message "
    "says how many they take)",
    "prompt.invalid": "`session.start` with `keyterms` that are not a list of strings, an empty keyterm, a "
    "`prompt` that is not a string, or either holding a control character",
    "commands.invalid": "`session.start.commands` is not a usable command set (the message says which command "
    "and why: too many, a bad name, a phrase too long or with no words, a name twice)",
    "session.start_timeout": "neither `session.start` nor `subscribe` within `ROOMSCRIBE_START_TIMEOUT_S` of "
    "connecting: then close code 4008",
    "recording.unavailable": "`session.start {record: true}` on a server that does not record (a cluster's control "
    "replica); the session was not started",
    "recording.not_found": "HTTP `GET /v1/sessions/{id}/recording` or `.../transcript` (404) of a recording that "
    "does not exist, was pruned, or belongs to another user (the same answer for all three)",
}


class ProtocolError(Exception):
    """A client message the server cannot act on; becomes an `error` message."""

    def __init__(
        self, code: str, message: str, request_id: RequestId | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        #: Seconds to wait before trying again (over a capacity limit).
        self.retry_after = retry_after

    def to_message(self, *, suppressed: int | None = None) -> Error:
        """The `error` message that tells the client (`suppressed`: errors not sent since the last)."""
        return Error(
            id=self.request_id, code=self.code, message=self.message, suppressed=suppressed, retry_after=self.retry_after
        )


def tag_of(cls: type[Struct]) -> str:
    """The `type` a message class is tagged with."""
    return str(cls.__struct_config__.tag)


# -- server → client ------------------------------------------------------------------------------
class ServerMessage(Struct, tag_field="type", kw_only=True, omit_defaults=True, dict=True):
    """Base of every server → client message (optional fields are left out when unset)."""

    #: Kept for a resume's replay (numbered events only).
    replayed: ClassVar[bool] = True
    #: May be dropped for a slow reader.
    droppable: ClassVar[bool] = False
    #: May be forwarded to a monitor subscription.
    subscribable: ClassVar[bool] = False

    @property
    def type(self) -> str:
        return tag_of(type(self))

    @property
    def seq(self) -> int | None:
        """The event's number within its session (None for messages that are not events)."""
        return None

    @property
    def subscription_id(self) -> str | None:
        """Set on events forwarded by a monitor subscription."""
        return None

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object as it arrived (decoded messages, unknown fields included), else as it is sent."""
        raw: dict[str, Any] | None = self.__dict__.get("_raw")
        if raw is None:
            raw = msgspec.to_builtins(self)
        return raw


class Reply(ServerMessage, kw_only=True):
    """A message that may answer a request."""

    id: Annotated[RequestId | None, Meta(description="the request's `id`")] = None


class Forwardable(ServerMessage, kw_only=True):
    """A session message a monitor subscription may receive, tagged with where it came from."""

    subscribable: ClassVar[bool] = True
    subscription_id: str | None = None
    session_id: str | None = None
    user: str | None = None


class SessionEvent(Forwardable, kw_only=True):
    """An event of a session: numbered by `seq`, which rises by one per event."""

    seq: int


class Hello(ServerMessage, tag="hello"):
    """right after the upgrade"""

    protocol: int
    user: str
    transports: list[Transport]
    default_transport: Transport


class AudioFormat(Struct, frozen=True):
    """Raw PCM carried in binary WebSocket frames (ws transport)."""

    encoding: Encoding = "pcm_s16le"
    sample_rate: SampleRate = 16000
    channels: Channels = 1

    @property
    def bytes_per_frame(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return 2 * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.bytes_per_frame * self.sample_rate


class ReadyAudio(AudioFormat, frozen=True):
    """The ws session's PCM format, and how much audio to put in one frame."""

    frame_ms: tuple[int, int] = (20, 40)


class LiveKitCredentials(Struct, kw_only=True):
    """Where and how the client publishes its microphone (LiveKit transport)."""

    url: str
    room: str
    identity: str
    token: str
    expires_at: int
    publish_gating: Literal["always", "vad"]


class SessionReady(Reply, tag="session.ready"):
    """answer to `session.start`"""

    session_id: str
    transport: Transport
    protocol: int
    room: str
    resumed: bool
    last_seq: int
    audio: Annotated[ReadyAudio | None, Meta(description="ws: the PCM format to send")] = None
    audio_bytes_received: Annotated[
        int | None,
        Meta(description="ws: audio bytes the session has read so far; after a resume, send only what comes after"),
    ] = None
    livekit: Annotated[LiveKitCredentials | None, Meta(description="livekit: where to publish the microphone")] = None


class Word(Struct, kw_only=True):
    """One recognised word with its session-audio times."""

    word: str
    start: float
    end: float
    probability: float
    confidence: Annotated[
        float | None, Meta(description="0 to 1: how sure the model is of the word (its tokens' mean probability)")
    ] = None


class SpeechStart(SessionEvent, tag="speech.start"):
    """voice activity began an utterance"""

    utterance_id: str
    start: float
    participant: str | None = None


class InterimTranscript(SessionEvent, tag="transcript.interim"):
    """the whole current text of the utterance, replacing the previous interim; may be dropped under load
    or for a slow reader"""

    replayed: ClassVar[bool] = False
    droppable: ClassVar[bool] = True
    utterance_id: str
    text: str
    start: float
    end: float
    participant: str | None = None


class FinalTranscript(SessionEvent, tag="transcript.final"):
    """the utterance's settled text; only when it has text"""

    utterance_id: str
    text: str
    start: float
    end: float
    reason: Literal["silence", "max_length", "stop"]
    words: list[Word] | None = None
    participant: str | None = None
    language: Annotated[str | None, Meta(description='`language: "auto"` sessions: the language detected')] = None
    language_probability: Annotated[float | None, Meta(description="how sure the detection was (0–1)")] = None


class Command(SessionEvent, tag="command"):
    """a configured voice command was said (see Voice commands): right after the `transcript.final` that
    carried it"""

    name: Annotated[str, Meta(description="the command's name")]
    phrase: Annotated[str, Meta(description="the configured phrase that matched")]
    text: Annotated[str, Meta(description="the final's whole text")]
    utterance_id: str
    start: Annotated[float, Meta(description="session time of the phrase (the final's times without word times)")]
    end: float
    participant: str | None = None


class SpeechEnd(SessionEvent, tag="speech.end"):
    """closes every utterance that `speech.start` opened"""

    utterance_id: str
    end: float
    participant: str | None = None


class PublishStart(SessionEvent, tag="publish.start"):
    """LiveKit publish gating: publish the microphone now"""

    reason: Annotated[str | None, Meta(description='"always", "vad"')] = None


class PublishStop(SessionEvent, tag="publish.stop"):
    """LiveKit publish gating: stop publishing (the open utterance is already final)"""

    reason: Annotated[str | None, Meta(description='"vad", "inactivity"')] = None


class Token(Reply, tag="token"):
    """a fresh LiveKit token (on `token.refresh`, and pushed about a minute before expiry)"""

    replayed: ClassVar[bool] = False
    seq: int
    token: str
    expires_at: int


class Status(SessionEvent, tag="status", kw_only=True):
    """something to know that is not an error: `listening` (`participant`: the agent now receives that
    microphone — audio published before it is not heard), `livekit.degraded` / `livekit.recovered` /
    `livekit.failed` (the agent's own LiveKit connection), `interims_dropped` and `asr_backlog` (the model
    is behind), `asr_error`, `replay.truncated`, `transcription.gap` (a cluster's LiveKit session moved to
    another worker: the room's audio between `from` and `to` was not transcribed), `recording.failed` (the
session's recording could not be written — the disk; transcription goes on, the recording stops)"""

    seq: int | None = None  # type: ignore[assignment]  # only replay.truncated, sent outside the numbering, has none
    code: str
    message: str
    participant: str | None = None
    steady: Annotated[
        bool | None, Meta(description="listening: the received stream was steady (false: the agent stopped waiting)")
    ] = None
    settle_ms: Annotated[int | None, Meta(description="listening: how long the stream took to settle")] = None
    utterance_id: Annotated[str | None, Meta(description="asr_error")] = None
    dropped: Annotated[int | None, Meta(description="interims_dropped: since the last notice")] = None
    dropped_total: Annotated[int | None, Meta(description="interims_dropped: in this session")] = None
    pending_finals: Annotated[int | None, Meta(description="asr_backlog")] = None
    from_: Annotated[
        float | None,
        Meta(description="transcription.gap: session time (s) where transcription stopped (its worker died)"),
    ] = msgspec.field(default=None, name="from")
    to: Annotated[
        float | None, Meta(description="transcription.gap: session time (s) where it resumed (on another worker)")
    ] = None


class SessionEnded(Forwardable, tag="session.ended"):
    """the session is over for this socket; every final of the session came first (see Sessions)"""

    session_id: str
    reason: Annotated[
        str,
        Meta(
            description='"stopped" (`session.stop`), "replaced" (the same user started another session), '
            '"resumed_elsewhere" (the session goes on, on the socket that resumed it; only this socket sees it), '
            '"server_shutdown", "max_duration" (`ROOMSCRIBE_MAX_SESSION_S`), "lost" (cluster: Redis lost the session\'s '
            'state, e.g. it restarted without its data; start a new session), and, seen only by subscribers as no '
            'socket is attached then, "grace_expired" (no resume within the grace period) and "error" (the session '
            'could not open its media)'
        ),
    ]


class RecordingReady(SessionEvent, tag="recording.ready"):
    """the session's recording is complete on the server (sessions recorded: `session.start {record: true}` or
    `ROOMSCRIBE_RECORD`); comes right before `session.ended`"""

    session_id: str
    duration: Annotated[float, Meta(description="seconds of audio recorded (the longest participant's)")]
    url: Annotated[
        str,
        Meta(description="the audio (FLAC, 16 kHz mono): a path on the control server's HTTP origin; GET it with "
        "the control token"),
    ]
    transcript_url: Annotated[
        str, Meta(description="the finals: add `?format=json` (default), `vtt` or `srt`")
    ]
    participants: Annotated[
        list[str] | None, Meta(description="multi-user: whose audio was recorded (`url` + `?participant=`)")
    ] = None


class AuthExpiring(ServerMessage, tag="auth.expiring"):
    """the socket's control token expires soon: send `auth.refresh` with a fresh one"""

    expires_at: Annotated[int, Meta(description="the token's `exp` (Unix seconds)")]


class AuthExpired(ServerMessage, tag="auth.expired"):
    """the control token has expired: only `auth.refresh` and `ping` are served until a fresh token arrives;
    without one the socket is closed (close code 4001) after `close_in_s`; the session then waits for a resume"""

    expires_at: int
    close_in_s: float


class AuthRefreshed(Reply, tag="auth.refreshed"):
    """answer to `auth.refresh`: the socket now runs on the new token"""

    expires_at: Annotated[int, Meta(description="the new token's `exp` (Unix seconds)")]


class Pong(Reply, tag="pong"):
    """answer to `ping`"""

    time: float


class Subscribed(Reply, tag="subscribed"):
    """answer to `subscribe`"""

    subscription_id: str
    session_id: str | None
    user: str | None
    events: list[str]


class Unsubscribed(Reply, tag="unsubscribed"):
    """answer to `unsubscribe`"""

    subscription_id: str


class Error(Reply, tag="error"):
    """a request or frame could not be used; the socket and session go on (unless the code's meaning says
    the socket is closed)"""

    code: str
    message: str
    suppressed: Annotated[int | None, Meta(description="errors not sent since the last one (rate limit)")] = None
    retry_after: Annotated[
        float | None, Meta(description="over a capacity limit: seconds to wait before trying again")
    ] = None


SERVER_MESSAGES: tuple[type[ServerMessage], ...] = (
    Hello, SessionReady, SpeechStart, InterimTranscript, FinalTranscript, SpeechEnd, PublishStart, PublishStop,
    Token, Status, SessionEnded, Pong, Subscribed, Unsubscribed, Error, AuthExpiring, AuthExpired, AuthRefreshed,
    RecordingReady,
    Command,
)  # fmt: skip
SERVER_MESSAGE_TYPES: tuple[str, ...] = tuple(tag_of(cls) for cls in SERVER_MESSAGES)
#: Event types a monitor subscription may ask for (never `token`: LiveKit credentials).
SUBSCRIBABLE: frozenset[str] = frozenset(tag_of(cls) for cls in SERVER_MESSAGES if cls.subscribable)
#: A message with a `seq` that the session numbers.
Numbered = SessionEvent | Token
ServerMessageT = TypeVar("ServerMessageT", bound=ServerMessage)

if TYPE_CHECKING:
    SubscribableType = str
else:  # the literal is derived from the message classes above
    SubscribableType = Literal[tuple(sorted(SUBSCRIBABLE))]


# -- client → server ------------------------------------------------------------------------------
class Request(Struct, tag_field="type", kw_only=True):
    """Base of every client → server message."""

    #: Answered only after slow work (joining a room, finalising an utterance); the server reads a
    #: socket's requests one at a time, so a ping sent meanwhile is answered afterwards.
    slow: ClassVar[bool] = False
    id: Annotated[RequestId | None, Meta(description="echoed in the reply")] = None

    @property
    def type(self) -> str:
        return tag_of(type(self))


class Resume(Struct, frozen=True):
    """The session to resume and the last `seq` the client saw."""

    session_id: NonEmpty
    last_seq: Annotated[int, Meta(ge=0)] = 0


class CommandSpec(Struct, frozen=True):
    """A voice command: its name and the phrases that say it (see Voice commands)."""

    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
    phrases: Annotated[list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(min_length=1, max_length=4)]


class SessionStart(Request, tag="session.start"):
    """Starts a session, or resumes one within its grace period. Answered by `session.ready` or `error`."""

    slow: ClassVar[bool] = True
    transport: Transport | None = None
    audio: Annotated[AudioFormat | None, Meta(description="ws transport only")] = None
    interim: bool = True
    echo: Annotated[bool, Meta(description="ws: send the audio back")] = False
    resume: Resume | None = None
    room: Annotated[
        Annotated[str, Meta(min_length=1, max_length=128)] | None,
        Meta(
            description="multi-user: transcribe every publisher of this room (`multi_user` claim; "
            "any room outside `roomscribe-u-…`, or, if the token has a `rooms` claim, one it lists)"
        ),
    ] = None
    protocol: ProtocolVersion = 1
    language: Annotated[
        Language | None,
        Meta(description='a Whisper language code, or "auto" (detect per utterance); default: the server\'s'),
    ] = None
    task: Annotated[Task, Meta(description='"translate": English text whatever the language spoken')] = "transcribe"
    record: Annotated[
        bool,
        Meta(description="record the session's audio and finals on the server (`record` claim; see Recording)"),
    ] = False
    keyterms: Annotated[
        list[str] | None,
        Meta(
            description="words and names to spell right (decoder hotwords; at most 100 of at most 50 characters); "
            "default: the server's (`ROOMSCRIBE_KEYTERMS`), `[]`: none"
        ),
    ] = None
    prompt: Annotated[
        str | None,
        Meta(
            description="text the speech follows on from (a topic, spellings; at most 1000 characters, and with the "
            "keyterms at most 223 tokens); default: the server's (`ROOMSCRIBE_PROMPT`), `\"\"`: none"
        ),
    ] = None
    words: Annotated[
        bool | None,
        Meta(description="every final carries `words` with times and confidences; default: the server's"),
    ] = None
    commands: Annotated[
        Annotated[list[CommandSpec], Meta(max_length=16)] | None,
        Meta(description="this session's voice commands instead of the server's (`[]`: none)"),
    ] = None


class SessionStop(Request, tag="session.stop"):
    """Finalises the open utterance (its `transcript.final` and `speech.end` come first), then
    `session.ended {reason: "stopped"}`."""

    slow: ClassVar[bool] = True


class Vad(Request, tag="vad"):
    """The client's own voice activity (LiveKit sessions with `ROOMSCRIBE_PUBLISH_GATING=vad`)."""

    speaking: bool


class TokenRefresh(Request, tag="token.refresh"):
    """LiveKit sessions: a fresh client token, answered by `token`."""

    slow: ClassVar[bool] = True


class Ping(Request, tag="ping"):
    """Answered by `pong {id?, time}`."""


class Subscribe(Request, tag="subscribe"):
    """Watch another session's events (see Monitor subscriptions). Answered by `subscribed`."""

    session_id: NonEmpty | None = None
    user: NonEmpty | None = None
    events: Annotated[list[SubscribableType], Meta(min_length=1, description="default: all")] = msgspec.field(
        default_factory=lambda: sorted(SUBSCRIBABLE)
    )

    def __post_init__(self) -> None:
        if (self.session_id is None) == (self.user is None):
            raise ValueError("subscribe needs exactly one of 'session_id' or 'user'")


class Unsubscribe(Request, tag="unsubscribe"):
    """Answered by `unsubscribed`."""

    subscription_id: str


class AuthRefresh(Request, tag="auth.refresh"):
    """A fresh control token for this socket (same user; checked like the one it connected with), e.g. on
    `auth.expiring`. Answered by `auth.refreshed`, or `error` (`auth.invalid_token`, `auth.wrong_user`)."""

    token: Annotated[str, Meta(min_length=1, max_length=8192)]


REQUESTS: tuple[type[Request], ...] = (
    SessionStart, SessionStop, Vad, TokenRefresh, Ping, Subscribe, Unsubscribe, AuthRefresh,
)  # fmt: skip
CLIENT_MESSAGE_TYPES: tuple[str, ...] = tuple(tag_of(cls) for cls in REQUESTS)

_REQUEST_UNION = reduce(operator.or_, REQUESTS)
_SERVER_UNION = reduce(operator.or_, SERVER_MESSAGES)
_REQUEST_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_REQUEST_UNION)
_ENCODER = msgspec.json.Encoder()

#: Fields whose bad values have their own error code (else `bad_request`), and a hint for the fix.
_FIELD_ERRORS: dict[str, tuple[str, str]] = {
    "id": ("bad_message", "'id' must be a string or an integer"),
    "protocol": ("protocol.unsupported_version", f"this server speaks protocol {PROTOCOL_VERSION}"),
    "audio.encoding": ("audio.unsupported_format", f"use {ENCODING!r}"),
    "audio.sample_rate": (
        "audio.unsupported_format",
        f"use one of {list(SUPPORTED_SAMPLE_RATES)} (16000 preferred)",
    ),
    "audio.channels": ("audio.unsupported_format", "use 1 (or 2)"),
    "language": ("language.unknown", 'use "auto" or a Whisper language code such as "en", "de", "fr"'),
    "task": ("bad_request", 'use "transcribe" or "translate"'),
    "subscription_id": ("subscription.not_found", "no subscription with that id on this socket"),
    "keyterms": ("prompt.invalid", "use a list of strings"),
    "prompt": ("prompt.invalid", "use a string"),
    "words": ("bad_request", "use true or false"),
    "commands": ("commands.invalid", "at most 16 commands of 1–4 phrases (≤ 100 characters) and names of a-z0-9_.-"),
}
_ERROR_AT = re.compile(r"^(?P<detail>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_MAX_ERROR_MESSAGE = 300


# -- encoding and decoding ----------------------------------------------------------------------
def encode(message: ServerMessage | Request) -> bytes:
    """A message as a JSON text frame's bytes (UTF-8)."""
    return _ENCODER.encode(message)


def decode_request(text: str | bytes) -> Request:
    """Decode and validate one client text frame; any failure is a coded ProtocolError."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_MESSAGE_BYTES:
        raise ProtocolError("message_too_large", f"text messages are limited to {MAX_TEXT_MESSAGE_BYTES} bytes")
    try:
        request: Request = _REQUEST_DECODER.decode(text)
        return request
    except msgspec.ValidationError as error:
        raise _request_error(text, error) from None
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        raise ProtocolError("bad_json", "the message is not valid JSON") from None


def _request_error(text: str | bytes, error: msgspec.ValidationError) -> ProtocolError:
    """The coded error for a frame that is JSON but not a valid request, checked envelope first."""
    try:
        data = msgspec.json.decode(text)
    except msgspec.ValidationError:  # JSON, but a number no 64-bit integer or double holds (e.g. a 5,000-digit id)
        return ProtocolError("bad_message", "the message holds a number out of range (an integer must fit in 64 bits)")
    except (msgspec.DecodeError, RecursionError, UnicodeError):  # invalid further on than the typed decode read
        return ProtocolError("bad_json", "the message is not valid JSON")
    if not isinstance(data, dict):
        return ProtocolError("bad_message", "a message must be a JSON object with a 'type'")
    request_id = data.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        return ProtocolError("bad_message", _FIELD_ERRORS["id"][1])
    msg_type = data.get("type")
    if not isinstance(msg_type, str) or not msg_type:
        return ProtocolError("bad_message", "the message has no 'type'", request_id)
    if msg_type not in CLIENT_MESSAGE_TYPES:
        known = ", ".join(CLIENT_MESSAGE_TYPES)
        return ProtocolError("unknown_type", f"unknown message type {msg_type[:64]!r}; known: {known}", request_id)
    path, detail = _locate(str(error))
    code, hint = _FIELD_ERRORS.get(path) or _FIELD_ERRORS.get(re.split(r"[.\[]", path)[0], ("bad_request", ""))
    message = f"{msg_type}: '{path}' {detail}" if path else f"{msg_type}: {detail}"
    if hint:
        message += f"; {hint}"
    return ProtocolError(code, message[:_MAX_ERROR_MESSAGE], request_id)


def _locate(error: str) -> tuple[str, str]:
    """(dotted field path, what is wrong) from a msgspec validation message."""
    match = _ERROR_AT.match(error)
    assert match is not None  # the pattern matches any text
    path = (match["path"] or "").lstrip(".")
    detail = match["detail"]
    missing = _MISSING.match(detail)
    if missing is not None:
        return f"{path}.{missing['field']}".lstrip("."), "is required"
    return path, detail[:1].lower() + detail[1:]


def decode_server_message(data: dict[str, Any], *, exact: bool = False) -> ServerMessage:
    """Validate a decoded JSON object as a server message, keeping the object as its `raw`.

    Raises msgspec.ValidationError for an unknown `type` or a field that does not fit; unknown
    fields are ignored unless `exact` (the server's own messages must not carry undeclared fields).
    """
    message: ServerMessage = msgspec.convert(data, _SERVER_UNION)
    if exact:
        undeclared = set(data) - set(message.__struct_encode_fields__) - {"type"}
        if undeclared:
            raise msgspec.ValidationError(
                f"{message.type} has no field {', '.join(sorted(undeclared))}: declare it in control/schema.py"
            )
    return with_raw(message, data)


def with_raw(message: ServerMessageT, raw: dict[str, Any]) -> ServerMessageT:
    """`message` with `raw` as the JSON object it came from."""
    message.__dict__["_raw"] = raw
    return message


def json_schema() -> dict[str, Any]:
    """The JSON Schema of both directions: `$defs.ClientMessage` and `$defs.ServerMessage`."""
    (client, server), components = msgspec.json.schema_components(
        [_REQUEST_UNION, _SERVER_UNION], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"roomscribe control protocol, version {PROTOCOL_VERSION}",
        "$defs": {**components, "ClientMessage": client, "ServerMessage": server},
        "anyOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
    }


# -- between processes: control replicas and transcription workers (docs/deploy.md) ----------------
#: The version of the messages below. A process reads every version up to its own and writes its
#: own, so during a rolling upgrade an old and a new process understand each other as long as a new
#: version only adds fields (with defaults) or message types.
ClusterVersion = Literal[1]
CLUSTER_VERSION: int = get_args(ClusterVersion)[0]


class ClusterMessage(Struct, tag_field="type", kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    """Base of every message between control replicas and workers (JSON in Redis)."""

    v: int = CLUSTER_VERSION


class SessionRecord(ClusterMessage, tag="session.record", kw_only=True):
    """A session in the registry: what any control replica needs to resume it, any worker to run it."""

    session_id: str
    user: str
    room: str
    transport: Transport
    audio: AudioFormat | None = None
    interim: bool = True
    echo: bool = False
    multi_user: bool = False
    created_at: float
    language: str | None = None  # None: the worker's default (ROOMSCRIBE_LANGUAGE)
    task: str = "transcribe"
    #: The session's decoding options as `session.start` gave them (None: the worker's defaults).
    keyterms: list[str] | None = None
    prompt: str | None = None
    words: bool | None = None
    #: The session's voice commands, resolved by the control replica (None: none; the worker matches them).
    commands: list[CommandSpec] | None = None


class WorkerState(ClusterMessage, tag="worker.state", kw_only=True):
    """A worker's heartbeat: its capacity and load (a worker not heard from in 3 heartbeats is dead)."""

    worker_id: str
    capacity: Annotated[int, Meta(description="sessions it takes at most")]
    active: Annotated[int, Meta(description="sessions it runs now")]
    queued_final_audio_s: Annotated[float, Meta(description="audio in finals waiting for its model")] = 0.0
    draining: Annotated[bool, Meta(description="takes no new session (SIGTERM)")] = False
    at: Annotated[float, Meta(description="wall time of this heartbeat")]


class SessionJob(ClusterMessage, tag="session.job", kw_only=True):
    """control → worker (the worker's job stream): run this session's transcription."""

    session_id: str
    #: Read the session's input stream after this entry id ("0": from the start).
    input_after: str = "0"
    #: Continuing from a checkpoint (`ClusterStore.takeover_job`): the session time of the first
    #: sample read, and the number of the next utterance id ("u<n>"), so events carry on seamlessly.
    audio_s: float = 0.0
    first_utterance: int = 1
    #: Another worker ran the session before (a LiveKit session then reports the gap in its audio).
    takeover: bool = False


class Checkpoint(ClusterMessage, tag="checkpoint", kw_only=True):
    """A worker's resume point for a session (kept in its registry entry): everything up to input
    entry `input_id` is transcribed and its events are on the output stream, and no utterance is
    open, so a replacement worker reads on after `input_id` with times from `audio_s` and
    utterance ids from `next_utterance`."""

    input_id: str
    audio_s: float
    next_utterance: int = 1


class AudioIn(ClusterMessage, tag="audio", kw_only=True):
    """control → worker (the session's input stream): PCM samples; the bytes travel beside it."""

    sample_rate: int
    channels: int = 1
    dtype: Literal["int16", "float32"] = "int16"
    participant: str | None = None


class FinishIn(ClusterMessage, tag="finish", kw_only=True):
    """control → worker: finalise the open utterance(s) (one participant's, or all: None)."""

    request: str
    participant: str | None = None
    all: bool = False


class VadIn(ClusterMessage, tag="vad", kw_only=True):
    """control → worker: the client's own voice activity (a LiveKit session's `vad` request)."""

    speaking: bool


class ReadyIn(ClusterMessage, tag="ready", kw_only=True):
    """control → worker: session.ready of a new LiveKit session went out (publishing may start)."""


class EndIn(ClusterMessage, tag="end", kw_only=True):
    """control → worker: the session ended; finalise nothing more, release it."""

    reason: str


class Accepted(ClusterMessage, tag="accepted", kw_only=True):
    """worker → control (the session's output stream): the worker runs the session now."""

    worker_id: str


class Refused(ClusterMessage, tag="refused", kw_only=True):
    """worker → control: the worker is full or draining; try another."""

    worker_id: str
    reason: str


class EventOut(ClusterMessage, tag="event", kw_only=True):
    """worker → control: one session event (a server message whose `seq` the control tier sets)."""

    message: msgspec.Raw


class Finished(ClusterMessage, tag="finished", kw_only=True):
    """worker → control: a `finish` request is done (its finals came before this)."""

    request: str


class Released(ClusterMessage, tag="released", kw_only=True):
    """worker → control: the worker let the session go (after `end`, or draining)."""

    worker_id: str


class ReplaceIn(ClusterMessage, tag="replace", kw_only=True):
    """control → control (the session's output stream, which its replica reads): the user started a
    new session on another replica; end this one as `replaced` (one session per user in the cluster)."""

    by: Annotated[str, Meta(description="the replica where the user's new session starts")]


class Watched(ClusterMessage, tag="watched", kw_only=True):
    """control → control (published on the user's watch channel): a session event for monitor
    subscriptions on any replica (`subscribe`), sent by the replica that holds the session."""

    session_id: str
    user: str
    message: msgspec.Raw


CLUSTER_MESSAGES: tuple[type[ClusterMessage], ...] = (
    SessionRecord, WorkerState, SessionJob, Checkpoint, AudioIn, FinishIn, VadIn, ReadyIn, EndIn, Accepted, Refused,
    EventOut, Finished, Released, ReplaceIn, Watched,
)  # fmt: skip
_CLUSTER_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(reduce(operator.or_, CLUSTER_MESSAGES))


def encode_cluster(message: ClusterMessage) -> bytes:
    """A message between processes as JSON bytes."""
    return _ENCODER.encode(message)


def decode_cluster(data: bytes | str) -> ClusterMessage:
    """Decode a message between processes (msgspec.ValidationError / DecodeError when it is not one)."""
    message: ClusterMessage = _CLUSTER_DECODER.decode(data)
    return message
