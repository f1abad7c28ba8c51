"""Binary PCM frames on the control socket (the ws transport): checks and conversion to samples."""

from __future__ import annotations

import numpy as np

from control.protocol import AudioFormat, ProtocolError


class WsAudioInput:
    """Turns a session's binary frames into int16 sample arrays.

    A frame that splits a sample keeps the partial bytes for the next frame (no audio is lost)
    and is reported as `audio.odd_length`; a frame longer than `max_frame_s` is refused whole.
    """

    def __init__(self, fmt: AudioFormat, max_frame_s: float = 1.0) -> None:
        self.format = fmt
        self.max_frame_bytes = int(fmt.bytes_per_second * max_frame_s)
        self._pending = b""

    def accept(self, data: bytes) -> tuple[np.ndarray | None, ProtocolError | None]:
        """Return (samples or None, a non-fatal error or None) for one binary frame."""
        if len(data) > self.max_frame_bytes:
            seconds = len(data) / self.format.bytes_per_second
            return None, ProtocolError(
                "audio.frame_too_large",
                f"an audio frame of {len(data)} bytes ({seconds:.2f} s) was refused; frames may hold at most "
                f"{self.max_frame_bytes} bytes — send 20–40 ms per frame",
            )
        data = self._pending + data
        usable = len(data) - len(data) % self.format.bytes_per_frame
        self._pending = data[usable:]
        error = None
        if self._pending:
            error = ProtocolError(
                "audio.odd_length",
                f"an audio frame did not end on a sample boundary ({self.format.bytes_per_frame} bytes per "
                f"sample frame); the {len(self._pending)} trailing byte(s) were kept for the next frame",
            )
        if usable == 0:
            return None, error
        return np.frombuffer(data[:usable], dtype="<i2"), error
