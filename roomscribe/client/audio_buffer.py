"""Outgoing audio that must survive a dropped link: unsent frames, and sent ones not yet confirmed.

The server handles a socket's messages in order, so a `pong` proves that every frame sent before
its `ping` arrived. Frames sent after the last confirmed ping are kept ("in flight"); after a
reconnect they are sent again, ahead of the frames buffered during the outage, so the session's
audio timeline ("samples received") stays continuous. The total is bounded: past `max_bytes` the
oldest audio is dropped first and counted.
"""

from __future__ import annotations

from collections import deque


class AudioBuffer:
    """A bounded FIFO of PCM frames with ping-based acknowledgement."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._pending: deque[bytes] = deque()
        self._in_flight: deque[tuple[int, bytes]] = deque()  # (sent index, frame)
        self._bytes = 0
        self._in_flight_bytes = 0
        self._sent = 0  # frames handed to the socket, ever
        #: Session byte offset of the next frame to send (rewound frames are sent again).
        self.offset = 0
        #: Frames (and bytes) dropped because the buffer was full: audio the server never gets.
        self.dropped_frames = 0
        self.dropped_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        """Pending plus in-flight bytes."""
        return self._bytes

    @property
    def in_flight_bytes(self) -> int:
        """Bytes sent but not yet confirmed."""
        return self._in_flight_bytes

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    @property
    def in_flight_frames(self) -> int:
        return len(self._in_flight)

    def push(self, frame: bytes) -> None:
        """Queue a frame to send, dropping the oldest audio if the buffer would overflow."""
        if not frame:
            return
        self._pending.append(frame)
        self._bytes += len(frame)
        while self._bytes > self.max_bytes:
            if self._in_flight:
                _, old = self._in_flight.popleft()  # sent, maybe received: stop keeping it
                self._bytes -= len(old)
                self._in_flight_bytes -= len(old)
                continue
            old = self._pending.popleft()
            self._bytes -= len(old)
            self.dropped_frames += 1
            self.dropped_bytes += len(old)

    def next_frame(self) -> bytes | None:
        """The next frame to send (moved to in flight), or None when nothing is pending."""
        if not self._pending:
            return None
        frame = self._pending.popleft()
        self._in_flight.append((self._sent, frame))
        self._in_flight_bytes += len(frame)
        self._sent += 1
        self.offset += len(frame)
        return frame

    def mark(self) -> int:
        """A mark for a ping sent now: its pong confirms every frame handed out before it."""
        return self._sent

    def ack(self, mark: int) -> None:
        """Forget in-flight frames confirmed by the pong of a ping sent at `mark`."""
        while self._in_flight and self._in_flight[0][0] < mark:
            _, frame = self._in_flight.popleft()
            self._bytes -= len(frame)
            self._in_flight_bytes -= len(frame)

    def rewind(self) -> int:
        """The link dropped: unconfirmed frames go back to the front of the queue; returns how many."""
        count = len(self._in_flight)
        for _, frame in reversed(self._in_flight):
            self._pending.appendleft(frame)
        self.offset -= self._in_flight_bytes
        self._in_flight.clear()
        self._in_flight_bytes = 0
        return count

    def skip_received(self, received_bytes: int) -> int:
        """After a resume: drop rewound frames the server reports it already read (they arrived
        before the link dropped), so no audio is heard twice. Returns how many were skipped."""
        skipped = 0
        while self._pending and self.offset + len(self._pending[0]) <= received_bytes:
            frame = self._pending.popleft()
            self._bytes -= len(frame)
            self.offset += len(frame)
            skipped += 1
        return skipped

    def clear(self) -> None:
        self.offset = 0
        self._pending.clear()
        self._in_flight.clear()
        self._bytes = 0
        self._in_flight_bytes = 0
