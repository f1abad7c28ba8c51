"""One session's recording, on the event loop's side: collects, and hands the disk work to a thread.

The pipeline's audio tap and the session's finals only append to memory here (a few microseconds
per frame); a writer task takes what has gathered every `flush_s` (at once for a final) and writes
it in the recordings' thread pool (control/recording_files.py), one batch at a time per session, so
neither the event loop nor any other session waits for this one's disk. A write that fails (disk
full, directory gone) or a disk that falls `max_pending_s` of audio behind stops the recording and
tells the client once (`status {code: "recording.failed"}`); the transcription goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np

from control.recording_files import Batch, RecordingFiles
from control.schema import FinalTranscript, RecordingReady, ServerMessage, Status, encode
from roomscribe.common.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

FAILED = "recording.failed"
#: Longest a session's end waits for its recording's last writes (a disk that hangs).
CLOSE_TIMEOUT_S = 30.0

#: Reports a problem to the session's client: (status code, message).
ErrorReport = Callable[[str, str], None]


@runtime_checkable
class TapsAudio(Protocol):
    """A pipeline that shows the audio it hears (agent.pipeline.TranscriptionPipeline)."""

    audio_tap: Callable[[np.ndarray], None] | None


def recording_path(session_id: str) -> str:
    """Where the owner downloads a session's audio (on the control server's HTTP origin)."""
    return f"/v1/sessions/{session_id}/recording"


def transcript_path(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/transcript"


@dataclass(frozen=True)
class RecordingSummary:
    """A finished recording: what `recording.ready` says."""

    session_id: str
    duration: float
    participants: list[str] | None

    def message(self, seq: int) -> RecordingReady:
        return RecordingReady(
            seq=seq,
            session_id=self.session_id,
            duration=self.duration,
            url=recording_path(self.session_id),
            transcript_url=transcript_path(self.session_id),
            participants=self.participants,
        )


def _pcm16(samples: np.ndarray) -> np.ndarray:
    """16 kHz float32 in [-1, 1] (int16 / 32768, as the pipeline made it) → int16, exactly back."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


class SessionRecording:
    """Records one session: taps its pipelines' audio and observes its events."""

    def __init__(
        self,
        session_id: str,
        files: RecordingFiles,
        executor: Executor,
        on_error: ErrorReport,
        *,
        multi_user: bool = False,
        flush_s: float = 1.0,
        max_pending_s: float = 60.0,
    ) -> None:
        self.session_id = session_id
        self.files = files
        self.multi_user = multi_user
        self._executor = executor
        self._on_error = on_error
        self.flush_s = flush_s
        self.max_pending_s = max_pending_s
        self._batch = Batch()
        self._pending_samples = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.failed = False
        self._closing = False

    async def open(self) -> bool:
        """Create the directory and the first manifest, then start writing; False (and the client is
        told) when that failed: the session goes on unrecorded."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.files.create)
        except Exception as error:
            self._fail(error)
            return False
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return True

    # -- on the event loop: collect --------------------------------------------------------------
    def tap(self, pipeline: object, participant: str | None) -> None:
        """Record the audio `pipeline` hears, as `participant`'s."""
        if isinstance(pipeline, TapsAudio):
            pipeline.audio_tap = partial(self._audio, participant)
        else:
            log.warning("session %s: its pipeline shows no audio; only the transcript is recorded", self.session_id)

    def _audio(self, participant: str | None, samples: np.ndarray) -> None:
        if self.failed or self._closing:
            return
        self._batch.audio.setdefault(participant, []).append(_pcm16(samples))
        self._pending_samples += samples.shape[0]
        if self._pending_samples > self.max_pending_s * SAMPLE_RATE:
            self._fail(OSError(f"the disk fell more than {self.max_pending_s:.0f} s of audio behind"))

    def observe(self, message: ServerMessage) -> None:
        """A session event: finals go to the transcript, `transcription.gap`s to the manifest."""
        if self.failed or self._closing:
            return
        if isinstance(message, FinalTranscript):
            self._batch.finals.append(encode(message))
            self._wake.set()  # a final is on disk at once, not at the next flush
        elif isinstance(message, Status) and message.code == "transcription.gap":
            self._batch.gaps.append({"from": message.from_, "to": message.to, "reason": message.code})

    # -- the writer task -----------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.failed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_s):
                    await self._wake.wait()
            self._wake.clear()
            batch, self._batch, self._pending_samples = self._batch, Batch(), 0
            if batch:
                try:
                    await loop.run_in_executor(self._executor, self.files.write, batch)
                except Exception as error:
                    self._fail(error)
            if self._closing and not self._batch:
                return

    def _fail(self, error: BaseException) -> None:
        """Stop recording and tell the client once; the transcription goes on."""
        if self.failed:
            return
        self.failed = True
        self._batch, self._pending_samples = Batch(), 0
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        log.warning("session %s: recording stopped: %s: %s", self.session_id, type(error).__name__, error)
        self._on_error(FAILED, f"the recording could not be written ({reason}); it stopped, the transcription goes on")

    # -- the end -------------------------------------------------------------------------------------
    async def close(self, reason: str) -> RecordingSummary | None:
        """Write what is left and finish the files (the session's finals came first); what
        `recording.ready` says, or None when nothing usable was recorded."""
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._writer is not None:
                    await self._writer
                if self.failed and self._writer is None:
                    return None  # the directory was never made
                loop = asyncio.get_running_loop()
                manifest = await loop.run_in_executor(self._executor, self.files.close, time.time(), reason)
        except TimeoutError:
            self._fail(TimeoutError(f"the disk did not finish the recording within {CLOSE_TIMEOUT_S:.0f} s"))
            return None
        except Exception as error:
            self._fail(error)
            return None
        audio = manifest["audio"]
        return RecordingSummary(
            session_id=self.session_id,
            duration=max((entry["duration"] for entry in audio), default=0.0),
            participants=[entry["participant"] for entry in audio if entry["participant"] is not None]
            if self.multi_user
            else None,
        )
