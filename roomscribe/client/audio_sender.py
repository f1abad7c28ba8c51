"""The ws audio path of one session: frame, buffer, send in order, and confirm with pings.

The server handles a socket's messages in order, so the `pong` of a `ping` confirms every frame
written before it. At most `max_unconfirmed_ms` of audio is on the wire unconfirmed; after a
dropped link that unconfirmed audio is rewound, and after the resume the frames the server reports
it already read (`session.ready.audio_bytes_received`) are skipped: the rest is sent again, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from control.schema import Ping
from roomscribe.client.audio_buffer import AudioBuffer
from roomscribe.client.link import Link
from roomscribe.client.options import ClientOptions


class AudioSender:
    """PCM16 of one format from `push()` to the server, surviving dropped links."""

    def __init__(self, sample_rate: int, channels: int, options: ClientOptions, new_id: Callable[[str], str]) -> None:
        self.sample_bytes = 2 * channels
        self.bytes_per_second = self.sample_bytes * sample_rate
        self.options = options
        self.buffer = AudioBuffer(int(options.audio_buffer_s * self.bytes_per_second))
        #: Set whenever audio is confirmed (and by the owner when waiting should stop).
        self.progress = asyncio.Event()
        self._new_id = new_id
        self._wakeup = asyncio.Event()
        self._carry = b""
        self._pings: dict[str, int] = {}
        self._pinged_mark = 0

    # -- producer side -------------------------------------------------------------------------------
    def push(self, pcm: bytes) -> None:
        """Split into `frame_ms` frames on sample boundaries and queue them; never blocks."""
        data = self._carry + pcm
        frame_bytes = self.bytes_per_second * self.options.frame_ms // 1000
        whole = len(data) - len(data) % self.sample_bytes
        for start in range(0, whole, frame_bytes):
            self.buffer.push(data[start : min(start + frame_bytes, whole)])
        self._carry = data[whole:]
        self._wakeup.set()

    @property
    def settled(self) -> bool:
        """Nothing left to send or to confirm."""
        return not (self.buffer.pending_frames or self.buffer.in_flight_frames)

    @property
    def dropped_seconds(self) -> float:
        return self.buffer.dropped_bytes / self.bytes_per_second

    def seconds(self, s: float) -> int:
        """Bytes in `s` seconds of this audio."""
        return int(s * self.bytes_per_second)

    # -- acknowledgement ------------------------------------------------------------------------------
    def ping_message(self) -> Ping:
        """A ping to write now (under the link's send lock): its pong confirms the audio before it."""
        ping_id = self._new_id("p")
        mark = self.buffer.mark()
        self._pings[ping_id] = mark
        self._pinged_mark = max(self._pinged_mark, mark)
        return Ping(id=ping_id)

    def on_pong(self, ping_id: str) -> None:
        mark = self._pings.pop(ping_id, None)
        if mark is not None:
            self.buffer.ack(mark)
            self.progress.set()

    def rewind(self) -> int:
        """The link dropped: unconfirmed frames go back to the queue; returns how many."""
        self._pings.clear()
        self._pinged_mark = self.buffer.mark()
        return self.buffer.rewind()

    def resumed(self, received_bytes: int | None) -> int:
        """The session was resumed: skip rewound audio the server already has; returns frames skipped."""
        return 0 if received_bytes is None else self.buffer.skip_received(received_bytes)

    def restarted(self) -> None:
        """A new session replaces the lost one: its byte count starts again at zero."""
        self.buffer.offset = 0

    # -- writer -----------------------------------------------------------------------------------
    async def run(self, link: Link, is_open: asyncio.Event, current: Callable[[], bool]) -> None:
        """Send queued frames over `link` while `is_open`; ping every `ack_every_ms` of audio.

        Returns once `current()` is false (the session this audio belongs to is over).
        """
        ack_bytes = self.seconds(self.options.ack_every_ms / 1000)
        window_bytes = max(1, self.seconds(self.options.max_unconfirmed_ms / 1000))
        unconfirmed = 0
        while True:
            await is_open.wait()
            if not current():
                return
            if self.buffer.in_flight_bytes >= window_bytes:  # wait for a pong before sending more
                await self._ping_if_needed(link)
                self.progress.clear()
                await self.progress.wait()
                continue
            self._wakeup.clear()
            frame = await self._send_frame(link)
            unconfirmed += len(frame or b"")
            if frame is not None and unconfirmed < ack_bytes:
                continue
            await self._ping_if_needed(link)
            unconfirmed = 0
            if frame is None:
                await self._wakeup.wait()

    def wake(self) -> None:
        self._wakeup.set()

    async def _ping_if_needed(self, link: Link) -> None:
        if self.buffer.mark() > self._pinged_mark:
            await link.send(self.ping_message)

    async def _send_frame(self, link: Link) -> bytes | None:
        """Write the next buffered frame, if any; returns it."""
        taken: list[bytes] = []

        def make() -> bytes | None:
            frame = self.buffer.next_frame()
            if frame is not None:
                taken.append(frame)
            return frame

        await link.send(make)
        return taken[0] if taken else None
