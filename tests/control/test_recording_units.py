"""The recording's parts without a server: transcript documents, retention, and a writer whose disk fails."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest

from control.recording import SessionRecording
from control.recording_files import Batch, RecordingFiles, audio_file_name, read_transcript, write_json_atomically
from control.recordings import DAY_S, Recordings, default_directory
from control.schema import FinalTranscript, Status
from control.transcript_formats import as_srt, as_vtt, render

pytestmark = pytest.mark.timeout(30)

FINALS = [
    {"type": "transcript.final", "seq": 3, "utterance_id": "u1", "text": "And so my fellow Americans,", "start": 0.32,
     "end": 2.5, "reason": "silence"},
    {"type": "transcript.final", "seq": 7, "utterance_id": "u2", "text": "ask not -->\nwhat", "start": 3661.0406,
     "end": 3662.5, "reason": "stop", "participant": "bob"},
]  # fmt: skip


def test_vtt_and_srt_cues_carry_the_finals_times_text_and_speaker() -> None:
    assert as_vtt(FINALS) == (
        "WEBVTT\n\n"
        "00:00:00.320 --> 00:00:02.500\nAnd so my fellow Americans,\n\n"
        "01:01:01.041 --> 01:01:02.500\n<v bob>ask not -> what\n"
    )
    assert as_srt(FINALS) == (
        "1\n00:00:00,320 --> 00:00:02,500\nAnd so my fellow Americans,\n\n"
        "2\n01:01:01,041 --> 01:01:02,500\nbob: ask not -> what\n"
    )
    assert json.loads(render("json", "s_x", FINALS)) == {"session_id": "s_x", "finals": FINALS}
    assert as_vtt([]) == "WEBVTT\n" and as_srt([]) == ""
    with pytest.raises(ValueError, match="one of json, vtt, srt"):
        render("doc", "s_x", FINALS)


def test_participants_get_their_own_files_and_names_never_escape_the_directory() -> None:
    assert audio_file_name(None) == "audio.flac"
    names = {audio_file_name(p) for p in ("a@b", "a_b", "../../etc/passwd", "x" * 300)}
    assert len(names) == 4 and all("/" not in n and n.endswith(".flac") and len(n) < 64 for n in names)


def test_the_default_directory_is_under_the_users_data_dir(tmp_path: Path) -> None:
    assert default_directory({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "roomscribe" / "recordings"
    assert default_directory({}) == Path.home() / ".local" / "share" / "roomscribe" / "recordings"


def test_a_manifest_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomically(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomically(path, {"v": object()})  # fails half-way through writing
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary file left


def test_a_transcript_line_cut_short_by_a_crash_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "transcript.jsonl").write_text(json.dumps(FINALS[0]) + "\n" + '{"type": "transcript.fi')
    assert read_transcript(tmp_path) == [FINALS[0]]


def _age(directory: Path, days: float) -> None:
    when = time.time() - days * DAY_S
    for path in [*directory.iterdir(), directory]:
        os.utime(path, (when, when))


async def test_retention_prunes_old_recordings_only(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path, retention_s=7 * DAY_S)
    for name, days in (("s_old", 8), ("s_recent", 6), ("s_live", 30), ("not-a-session", 30)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
        _age(tmp_path / name, days)
    os.utime(tmp_path / "s_recent" / "manifest.json")  # written to just now: counts from then
    live = await recordings.open("s_live", user="u", room="r", transport="ws", multi_user=False, on_error=print)
    _age(tmp_path / "s_live", 30)
    assert recordings.prune(time.time()) == ["s_old"]
    assert sorted(os.listdir(tmp_path)) == ["not-a-session", "s_live", "s_recent"]
    await recordings.finish(live, "stopped")
    _age(tmp_path / "s_live", 30)
    assert recordings.prune(time.time()) == ["s_live"]  # once its session ended
    assert Recordings(tmp_path, retention_s=0).prune(time.time() + 1000 * DAY_S) == []  # 0: kept forever
    await recordings.close()


def _final(seq: int) -> FinalTranscript:
    return FinalTranscript(seq=seq, utterance_id=f"u{seq}", text="hello", start=0.0, end=1.0, reason="silence")


class _Tapped:
    audio_tap = None


async def test_a_disk_that_fails_mid_session_stops_the_recording_and_says_so_once(tmp_path: Path) -> None:
    errors: list[tuple[str, str]] = []
    files = RecordingFiles(tmp_path / "s_a", {"session_id": "s_a"})
    with ThreadPoolExecutor(1) as executor:
        recording = SessionRecording("s_a", files, executor, lambda *e: errors.append(e), flush_s=0.05)
        assert await recording.open()
        pipeline = _Tapped()
        recording.tap(pipeline, None)
        assert pipeline.audio_tap is not None
        pipeline.audio_tap(np.full(16000, 0.25, dtype=np.float32))
        recording.observe(_final(1))
        await asyncio.wait_for(_until(lambda: read_transcript(files.directory)), 5)
        shutil.rmtree(files.directory)  # the directory goes away under the writer
        recording.observe(_final(2))
        recording.observe(_final(3))
        await asyncio.wait_for(_until(lambda: recording.failed), 5)
        pipeline.audio_tap(np.zeros(16000, dtype=np.float32))  # ignored from now on
        assert await recording.close("stopped") is None
    assert len(errors) == 1 and errors[0][0] == "recording.failed" and "transcription goes on" in errors[0][1]


async def test_a_disk_that_falls_behind_stops_the_recording_instead_of_filling_memory(tmp_path: Path) -> None:
    errors: list[tuple[str, str]] = []
    release = threading.Event()

    class StuckFiles(RecordingFiles):
        def write(self, batch: Batch) -> None:
            release.wait(10)
            super().write(batch)

    files = StuckFiles(tmp_path / "s_b", {"session_id": "s_b"})
    with ThreadPoolExecutor(1) as executor:
        recording = SessionRecording(
            "s_b", files, executor, lambda *e: errors.append(e), flush_s=0.01, max_pending_s=2.0
        )
        assert await recording.open()
        pipeline = _Tapped()
        recording.tap(pipeline, None)
        assert pipeline.audio_tap is not None
        pipeline.audio_tap(np.zeros(8000, dtype=np.float32))
        await asyncio.sleep(0.1)  # the writer takes that half second and hangs on the disk
        for _ in range(5):
            pipeline.audio_tap(np.zeros(8000, dtype=np.float32))
        assert recording.failed and errors and "behind" in errors[0][1]
        release.set()
        summary = await recording.close("stopped")
    # The files hold what was written before it fell behind, and they are finished.
    assert summary is not None and summary.duration == 0.5
    with av.open(str(files.directory / "audio.flac")) as container:
        assert sum(frame.samples for frame in container.decode(audio=0)) == 8000


async def test_gaps_go_to_the_manifest(tmp_path: Path) -> None:
    files = RecordingFiles(tmp_path / "s_c", {"session_id": "s_c"})
    with ThreadPoolExecutor(1) as executor:
        recording = SessionRecording("s_c", files, executor, lambda *e: None, flush_s=0.01)
        assert await recording.open()
        recording.observe(Status(seq=1, code="transcription.gap", message="worker lost", from_=3.5, to=9.25))
        recording.observe(Status(seq=2, code="asr_backlog", message="behind"))
        summary = await recording.close("stopped")
    assert summary is not None and summary.duration == 0.0
    manifest = json.loads((files.directory / "manifest.json").read_text())
    assert manifest["gaps"] == [{"from": 3.5, "to": 9.25, "reason": "transcription.gap"}]
    assert manifest["end_reason"] == "stopped" and manifest["audio"] == []


async def _until(predicate) -> None:
    while not predicate():  # noqa: ASYNC110  # a writer thread's result has no event to wait for
        await asyncio.sleep(0.01)
