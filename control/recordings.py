"""The server's session recordings: where they live, opening one per session, finding one, pruning.

`ROOMSCRIBE_RECORDINGS_DIR` (default: `$XDG_DATA_HOME/roomscribe/recordings`, i.e.
`~/.local/share/roomscribe/recordings`) holds one directory per recorded session (made on demand).
Recordings older than `ROOMSCRIBE_RECORDINGS_RETENTION_DAYS` (counted from their last write; 0:
keep them forever) are deleted when the server starts and then every hour (or every tenth of the
retention period, if that is shorter), never while their session is still recording. All disk
work runs in a small thread pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from control.config import Settings
from control.recording import ErrorReport, RecordingSummary, SessionRecording
from control.recording_files import SESSION_ID, RecordingFiles, read_manifest, read_transcript

log = logging.getLogger(__name__)

DAY_S = 86400.0
#: The longest time between two prunes.
PRUNE_EVERY_S = 3600.0
#: Threads writing recordings (FLAC encoding of 1 s of 16 kHz audio takes well under a millisecond).
WRITER_THREADS = 2


def default_directory(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/roomscribe/recordings`, else `~/.local/share/roomscribe/recordings`."""
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "roomscribe" / "recordings"


def _version() -> str:
    try:
        return metadata.version("roomscribe")
    except metadata.PackageNotFoundError:
        return "unknown"


class Recordings:
    """Every recording under one directory."""

    def __init__(self, directory: Path, *, retention_s: float = 30 * DAY_S, model: str = "", flush_s: float = 1.0) -> None:
        self.directory = directory
        self.retention_s = retention_s
        self.model = model
        self.flush_s = flush_s
        self.version = _version()
        self._executor = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="recording")
        self._recording: set[str] = set()  # sessions recording now (never pruned)
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Recordings:
        directory = Path(settings.recordings_dir).expanduser() if settings.recordings_dir else default_directory()
        model = settings.asr.model_path or "tiny.en (bundled)"
        return cls(directory, retention_s=settings.recordings_retention_days * DAY_S, model=model)

    async def start(self) -> None:
        """Prune now, then periodically (when recordings expire at all)."""
        if self.retention_s > 0:
            await self._prune_now()
            self._pruner = asyncio.get_running_loop().create_task(self._prune_periodically())
        log.info("session recordings in %s (kept %s)", self.directory,
                 f"{self.retention_s / DAY_S:g} days" if self.retention_s > 0 else "forever")

    async def close(self) -> None:
        """Stop pruning and let the writer threads finish (the sessions were ended first)."""
        if self._pruner is not None:
            self._pruner.cancel()
            self._pruner = None
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    # -- sessions --------------------------------------------------------------------------------------
    async def open(
        self, session_id: str, *, user: str, room: str, transport: str, multi_user: bool, on_error: ErrorReport
    ) -> SessionRecording:
        """Start recording a session (a failure to create its files is reported through `on_error`)."""
        manifest: dict[str, Any] = {
            "session_id": session_id, "user": user, "room": room, "transport": transport, "multi_user": multi_user,
            "model": self.model, "version": self.version, "started_at": time.time(),
        }  # fmt: skip
        files = RecordingFiles(self.directory / session_id, manifest)
        recording = SessionRecording(
            session_id, files, self._executor, on_error, multi_user=multi_user, flush_s=self.flush_s
        )
        self._recording.add(session_id)
        await recording.open()
        return recording

    async def finish(self, recording: SessionRecording, reason: str) -> RecordingSummary | None:
        """Finish a session's recording (see SessionRecording.close); from now on it may expire."""
        try:
            return await recording.close(reason)
        finally:
            self._recording.discard(recording.session_id)

    def session_dir(self, session_id: str) -> Path | None:
        """The directory of a session's recording (None for what cannot be a session id)."""
        return self.directory / session_id if SESSION_ID.match(session_id) else None

    async def manifest(self, session_id: str) -> dict[str, Any] | None:
        directory = self.session_dir(session_id)
        if directory is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._executor, read_manifest, directory)

    async def transcript(self, session_id: str) -> list[dict[str, Any]]:
        directory = self.session_dir(session_id)
        if directory is None:
            return []
        return await asyncio.get_running_loop().run_in_executor(self._executor, read_transcript, directory)

    # -- retention ----------------------------------------------------------------------------------
    async def _prune_periodically(self) -> None:
        every = min(PRUNE_EVERY_S, max(1.0, self.retention_s / 10))
        while True:
            await asyncio.sleep(every)
            await self._prune_now()

    async def _prune_now(self) -> None:
        try:
            removed = await asyncio.get_running_loop().run_in_executor(self._executor, self.prune, time.time())
        except Exception:
            log.exception("pruning the recordings in %s failed", self.directory)
            return
        if removed:
            log.info("pruned %d recordings older than %g days", len(removed), self.retention_s / DAY_S)

    def prune(self, now: float) -> list[str]:
        """Delete the recordings last written before `now - retention` (blocking); their session ids."""
        if self.retention_s <= 0 or not self.directory.is_dir():
            return []
        removed = []
        for entry in self.directory.iterdir():
            if not entry.is_dir() or not SESSION_ID.match(entry.name) or entry.name in self._recording:
                continue
            if _last_written(entry) < now - self.retention_s:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def _last_written(directory: Path) -> float:
    """The latest modification time of a recording's files (its directory's, if it has none)."""
    times = [directory.stat().st_mtime]
    for path in directory.iterdir():
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times)
