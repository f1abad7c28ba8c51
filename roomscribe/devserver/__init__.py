"""A small LiveKit-compatible server for development and tests (not for production).

``DevServer`` speaks enough of LiveKit's signalling (``/rtc`` dual-PC and ``/rtc/v1``
single-PC), media (Opus audio through aiortc) and Twirp RoomService for the official SDKs and
``livekit-api`` to work against it unchanged. See ``docs/devserver.md``.
"""

from .app import DEFAULT_KEYS, DevServer

__all__ = ["DEFAULT_KEYS", "DevServer"]
