"""Python client for the roomscribe control protocol.

`ControlClient` keeps a control socket up (reconnect with backoff and jitter, heartbeat), resumes
its session after a drop (every event once, in order), buffers and resends ws audio, and offers
events as callbacks (`on`) or an async iterator (`events()`). It is the I/O shell around
`client.core.ClientCore`, which keeps the session state, resume position, dedup, request matching
and subscriptions without a socket. `LiveKitPublisher` (`client.livekit_publisher`) publishes audio
over the LiveKit transport through `client.publish_loop.PublishLoop`, the one LiveKit publish loop.
"""

from roomscribe.client.control_client import ControlClient, Subscription
from roomscribe.client.errors import AuthRejected, ClientError, ConnectionLost, GaveUp, ServerError
from roomscribe.client.events import (
    ClientNotice,
    Command,
    Event,
    FinalTranscript,
    InterimTranscript,
    SessionEnded,
    SessionReady,
    SpeechEnd,
    SpeechStart,
    Status,
    parse_event,
)
from roomscribe.client.options import ClientOptions, ClientStats, ConnectionState, SessionState
from roomscribe.client.sources import PcmStream, microphone_stream, numpy_stream, wav_stream
from roomscribe.common.backoff import Backoff

__all__ = [
    "AuthRejected",
    "Backoff",
    "ClientError",
    "ClientNotice",
    "ClientOptions",
    "ClientStats",
    "Command",
    "ConnectionLost",
    "ConnectionState",
    "ControlClient",
    "Event",
    "FinalTranscript",
    "GaveUp",
    "InterimTranscript",
    "PcmStream",
    "ServerError",
    "SessionEnded",
    "SessionReady",
    "SessionState",
    "SpeechEnd",
    "SpeechStart",
    "Status",
    "Subscription",
    "microphone_stream",
    "numpy_stream",
    "parse_event",
    "wav_stream",
]
