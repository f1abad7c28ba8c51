"""Saving a session's recording where the client runs (`roomscribe push --record`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roomscribe.client.control_client import ControlClient
from roomscribe.client.events import RecordingReady


class RecordingCatcher:
    """A `ControlClient.on` callback that keeps the session's `recording.ready`."""

    def __init__(self) -> None:
        self.ready: RecordingReady | None = None

    def __call__(self, event: object) -> None:
        if isinstance(event, RecordingReady) and event.subscription_id is None:
            self.ready = event


async def save_recording(client: ControlClient, ready: RecordingReady, directory: Path) -> list[Path]:
    """Download the audio (FLAC) and the transcript (JSON and WebVTT) of `ready` into `directory`
    as `<session_id>.flac`, `.json` and `.vtt`; returns the paths written."""
    wanted = {
        "flac": ready.url,
        "json": ready.transcript_url + "?format=json",
        "vtt": ready.transcript_url + "?format=vtt",
    }
    bodies = await asyncio.gather(*(client.download(path) for path in wanted.values()))
    files = {directory / f"{ready.session_id}.{ext}": body for ext, body in zip(wanted, bodies, strict=True)}
    await asyncio.to_thread(_write, directory, files)
    return list(files)


def _write(directory: Path, files: dict[Path, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path, body in files.items():
        path.write_bytes(body)
