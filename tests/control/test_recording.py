"""Session recording end to end: real server on loopback, real model, real speech (ws transport)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from control_harness import ServerHandle, serving
from roomscribe.client.audio_files import read_wav
from roomscribe.client.control_client import ControlClient
from roomscribe.client.errors import ServerError
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, ROOT, normalise, pcm_frames, silence, wer
from tokens import mint_control_token, new_control_secret

pytestmark = pytest.mark.timeout(180)


async def stream(ws: aiohttp.ClientWebSocketResponse, samples: np.ndarray, speed: float = 8.0, frame_ms: int = 20) -> None:
    """Send `samples` as 20 ms frames at `speed`× real time."""
    for frame in pcm_frames(samples, frame_ms=frame_ms):
        await ws.send_bytes(frame)
        await asyncio.sleep(frame_ms / 1000 / speed)


def decode(path: Path | bytes) -> np.ndarray:
    """Every sample of a FLAC file (a path or its bytes), as int16."""
    import io

    source: Any = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    with av.open(source) as container:
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        assert container.streams.audio[0].sample_rate == 16000
    return np.concatenate(frames).astype(np.int16) if frames else np.zeros(0, np.int16)


async def get(handle: ServerHandle, path: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with handle.http.get(handle.server.http_url + path, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


def finals_on_disk(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "transcript.jsonl").read_text().splitlines()]


async def test_a_recorded_session_leaves_its_audio_transcript_and_manifest_for_its_owner(engine, tmp_path: Path) -> None:
    async with serving(engine, recordings_dir=str(tmp_path)) as handle:
        owner = handle.token("rita", permissions=("record",))
        client = await handle.connect("rita", token=owner)
        await client.send(type="session.start", id="s", record=True)
        ready = await client.wait_type("session.ready", id="s")
        session_id = ready["session_id"]
        streamed = np.concatenate([read_wav(JFK).samples, silence(1.0)])
        await stream(client.ws, streamed)
        await client.send(type="session.stop", id="stop")
        ended = await client.wait_type("session.ended")
        recording = client.of_type("recording.ready")[0]
        assert client.events.index(recording) < client.events.index(ended)
        finals = client.of_type("transcript.final")
        assert wer(JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10

        # recording.ready: the duration streamed, and where to get it.
        assert recording["session_id"] == session_id and "participants" not in recording
        assert abs(recording["duration"] - len(streamed) / 16000) <= 0.1
        assert recording["url"] == f"/v1/sessions/{session_id}/recording"
        assert recording["transcript_url"] == f"/v1/sessions/{session_id}/transcript"

        # The files: lossless audio of exactly what was streamed, the finals as sent, the manifest.
        directory = tmp_path / session_id
        audio = decode(directory / "audio.flac")
        assert abs(len(audio) - len(streamed)) / 16000 <= 0.1
        assert np.array_equal(audio, streamed[: len(audio)])
        assert finals_on_disk(directory) == finals
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["session_id"] == session_id and manifest["user"] == "rita"
        assert manifest["transport"] == "ws" and manifest["room"] == ready["room"]
        assert manifest["model"] and manifest["version"] and manifest["gaps"] == []
        assert manifest["end_reason"] == "stopped" and manifest["ended_at"] >= manifest["started_at"]
        assert manifest["audio"] == [
            {"participant": None, "file": "audio.flac", "codec": "flac", "sample_rate": 16000, "channels": 1,
             "started_at": manifest["audio"][0]["started_at"], "duration": recording["duration"]}
        ]  # fmt: skip
        assert manifest["finals"] == len(finals)

        # Downloads: the owner gets both; another user, no token, a bad token do not.
        status, body, content_type = await get(handle, recording["url"], owner)
        assert status == 200 and content_type == "audio/flac"
        assert body == (directory / "audio.flac").read_bytes()
        assert np.array_equal(decode(body), audio)
        status, body, _ = await get(handle, recording["transcript_url"], handle.token("rita"))  # no claim needed
        assert status == 200 and json.loads(body) == {"session_id": session_id, "finals": finals}
        status, body, content_type = await get(handle, recording["transcript_url"] + "?format=vtt", owner)
        assert status == 200 and content_type.startswith("text/vtt")
        vtt = body.decode()
        assert vtt.startswith("WEBVTT\n") and finals[0]["text"].strip() in vtt and " --> " in vtt
        status, body, _ = await get(handle, recording["transcript_url"] + "?format=srt", owner)
        srt = body.decode()
        assert status == 200 and srt.startswith("1\n00:00:") and "," in srt.splitlines()[1]
        status, body, _ = await get(handle, recording["transcript_url"] + "?format=docx", owner)
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"

        intruder = handle.token("mallory", permissions=("record",))
        for path in (recording["url"], recording["transcript_url"]):
            status, body, _ = await get(handle, path, intruder)
            assert status == 404 and json.loads(body)["error"]["code"] == "recording.not_found"
            status, body, _ = await get(handle, path, None)
            assert status == 401 and json.loads(body)["error"]["code"] == "auth.missing_token"
            status, body, _ = await get(handle, path, owner + "x")
            assert status == 401 and json.loads(body)["error"]["code"].startswith("auth.")
        # Unknown sessions answer the same as another user's; a monitor token reads anyone's.
        status, body, _ = await get(handle, "/v1/sessions/s_nosuchsession/recording", owner)
        assert status == 404 and json.loads(body)["error"]["code"] == "recording.not_found"
        status, _, _ = await get(handle, recording["url"], handle.token("ops", permissions=("monitor",)))
        assert status == 200
        await client.close()


async def test_record_needs_the_claim_unless_the_server_records_everything(engine, tmp_path: Path) -> None:
    async with serving(engine, recordings_dir=str(tmp_path)) as handle:
        client = await handle.connect("nora")
        await client.send(type="session.start", id="r", record=True)
        error = await client.wait_type("error", id="r")
        assert error["code"] == "not_allowed" and "record" in error["message"]
        # Without `record`, the same token starts an unrecorded session.
        await client.send(type="session.start", id="plain")
        ready = await client.wait_type("session.ready", id="plain")
        await client.send(type="session.stop", id="stop")
        await client.wait_type("session.ended")
        assert not client.of_type("recording.ready") and not (tmp_path / ready["session_id"]).exists()
        await client.close()
    async with serving(engine, recordings_dir=str(tmp_path), record=True) as handle:
        client = await handle.connect("nora")
        await client.send(type="session.start", id="s")
        ready = await client.wait_type("session.ready", id="s")
        await stream(client.ws, np.concatenate([read_wav(LIBRI).samples, silence(1.0)]))
        await client.send(type="session.stop")
        recording = await client.wait_type("recording.ready")
        await client.wait_type("session.ended")
        assert finals_on_disk(tmp_path / ready["session_id"]) == client.of_type("transcript.final")
        assert wer(LIBRI_TEXT, " ".join(f["text"] for f in client.of_type("transcript.final"))) <= 0.15
        async with ControlClient(handle.server.url, handle.token("nora")) as owner:
            assert decode(await owner.download(recording["url"])).size > 0
        async with ControlClient(handle.server.url, handle.token("nils")) as stranger:
            with pytest.raises(ServerError) as refused:
                await stranger.download(recording["url"])
            assert refused.value.code == "recording.not_found"
        await client.close()


async def test_a_resumed_session_goes_on_recording_into_the_same_files(engine, tmp_path: Path) -> None:
    async with serving(engine, recordings_dir=str(tmp_path), grace_period_s=15.0) as handle:
        token = handle.token("rosa", permissions=("record",))
        first = await handle.connect("rosa", token=token)
        await first.send(type="session.start", record=True)
        ready = await first.wait_type("session.ready")
        part_one = np.concatenate([read_wav(LIBRI).samples, silence(1.0)])
        await stream(first.ws, part_one)
        await first.send(type="ping", id="p")  # answered in order: every frame before it was read
        await first.wait_type("pong", id="p")
        await first.close()
        seen = [e for e in first.events if "seq" in e]

        second = await handle.connect("rosa", token=token)
        last_seq = seen[-1]["seq"] if seen else 0
        await second.send(type="session.start", id="r", resume={"session_id": ready["session_id"], "last_seq": last_seq})
        resumed = await second.wait_type("session.ready", id="r")
        assert resumed["audio_bytes_received"] == 2 * len(part_one)
        part_two = np.concatenate([read_wav(JFK).samples, silence(1.0)])
        await stream(second.ws, part_two)
        await second.send(type="session.stop")
        recording = await second.wait_type("recording.ready")
        await second.wait_type("session.ended")

        streamed = np.concatenate([part_one, part_two])
        directory = tmp_path / ready["session_id"]
        assert sorted(p.name for p in directory.iterdir()) == ["audio.flac", "manifest.json", "transcript.jsonl"]
        audio = decode(directory / "audio.flac")
        assert abs(len(audio) - len(streamed)) / 16000 <= 0.1 and np.array_equal(audio, streamed[: len(audio)])
        assert abs(recording["duration"] - len(streamed) / 16000) <= 0.1
        finals = [e for e in seen + second.events if e.get("type") == "transcript.final"]
        assert finals_on_disk(directory) == finals
        assert wer(LIBRI_TEXT + " " + JFK_TEXT, " ".join(f["text"] for f in finals)) <= 0.10
        await second.close()


async def test_a_recording_that_cannot_be_written_is_reported_and_transcription_goes_on(engine, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the recordings directory should be")
    async with serving(engine, recordings_dir=str(blocker / "recordings")) as handle:
        client = await handle.connect("dora", token=handle.token("dora", permissions=("record",)))
        await client.send(type="session.start", id="s", record=True)
        await client.wait_type("session.ready", id="s")
        failed = await client.wait_type("status", code="recording.failed")
        assert client.events.index(failed) > client.events.index(client.of_type("session.ready")[0])
        await stream(client.ws, np.concatenate([read_wav(JFK).samples, silence(1.0)]))
        await client.send(type="session.stop")
        await client.wait_type("session.ended")
        assert wer(JFK_TEXT, " ".join(f["text"] for f in client.of_type("transcript.final"))) <= 0.10
        assert not client.of_type("recording.ready")
        assert [e for e in client.of_type("status") if e["code"] == "recording.failed"] == [failed]  # told once
        await client.close()


# -- a server killed mid-session ---------------------------------------------------------------------
async def _start_serve(tmp_path: Path, secret: str) -> tuple[asyncio.subprocess.Process, str]:
    """`roomscribe serve` as a child process (ws only, recording everything); its control URL."""
    env = {**os.environ, "ROOMSCRIBE_CONTROL_SECRET": secret, "ROOMSCRIBE_AUDIO_TRANSPORT": "ws",
           "ROOMSCRIBE_RECORD": "true", "ROOMSCRIBE_RECORDINGS_DIR": str(tmp_path / "recordings"),
           "ROOMSCRIBE_PORT": "0", "ROOMSCRIBE_HOST": "127.0.0.1", "LIVEKIT_URL": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "none.env"), "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
    assert " on ws://" in line, line
    return proc, line.split(" on ", 1)[1].split()[0]


async def _until(predicate, timeout: float = 60.0) -> None:
    """Wait until `predicate()` holds (checked every 50 ms)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  # files on disk have no event to wait for
            await asyncio.sleep(0.05)


async def test_killing_the_server_mid_session_leaves_readable_files(engine, tmp_path: Path) -> None:
    secret = new_control_secret()
    proc, url = await _start_serve(tmp_path, secret)
    try:
        async with aiohttp.ClientSession() as http:
            token = mint_control_token(secret, "kim")
            ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            await ws.receive_json()  # hello
            await ws.send_json({"type": "session.start"})
            ready = await ws.receive_json()
            assert ready["type"] == "session.ready", ready
            directory = tmp_path / "recordings" / ready["session_id"]
            streamed = np.concatenate([read_wav(JFK).samples, silence(1.5), read_wav(LIBRI).samples])
            sender = asyncio.ensure_future(stream(ws, streamed, speed=2.0))
            transcript = directory / "transcript.jsonl"
            await _until(lambda: transcript.exists() and transcript.read_text().endswith("\n"))
            os.kill(proc.pid, signal.SIGKILL)  # mid-session: the LIBRI part is still being sent
            await proc.wait()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    finals = finals_on_disk(directory)
    heard = normalise(" ".join(f["text"] for f in finals))
    assert heard and normalise(JFK_TEXT).startswith(heard), heard  # the first phrase(s) of JFK
    audio = decode(directory / "audio.flac")  # a FLAC file whose writer never finished it
    assert np.array_equal(audio, streamed[: len(audio)])
    assert len(audio) / 16000 >= finals[-1]["end"] - 0.5, "the audio up to the final on disk is there"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["session_id"] == ready["session_id"] and manifest["user"] == "kim"
    assert manifest["ended_at"] is None and manifest["audio"][0]["file"] == "audio.flac"

    # A server started on the same directory serves what the killed one left.
    async with serving(engine, recordings_dir=str(tmp_path / "recordings"), control_secret=secret) as handle:
        status, body, _ = await get(handle, f"/v1/sessions/{ready['session_id']}/recording", token)
        assert status == 200 and np.array_equal(decode(body), audio)
        status, body, _ = await get(handle, f"/v1/sessions/{ready['session_id']}/transcript", token)
        assert status == 200 and json.loads(body)["finals"] == finals


# -- the command line -------------------------------------------------------------------------------
async def test_push_record_saves_the_audio_and_transcript_locally(engine, tmp_path: Path, monkeypatch, capsys) -> None:
    from roomscribe.client.cli import push_main

    async with serving(engine, recordings_dir=str(tmp_path / "server")) as handle:
        monkeypatch.setenv("ROOMSCRIBE_CONTROL_SECRET", handle.secret)  # push mints its token, with `record`
        argv = [str(LIBRI), "--url", handle.server.url, "--fast", "--record", "--save-dir", str(tmp_path / "mine"),
                "--env-file", str(tmp_path / "none.env")]  # fmt: skip
        code = await asyncio.to_thread(push_main, argv)
        captured = capsys.readouterr()
        assert code == 0, captured
    (session_dir,) = (tmp_path / "server").iterdir()
    saved = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert saved == [f"{session_dir.name}.{ext}" for ext in ("flac", "json", "vtt")]
    assert all(f"saved {tmp_path / 'mine' / name}" in captured.err for name in saved)
    mine = tmp_path / "mine" / session_dir.name
    assert mine.with_suffix(".flac").read_bytes() == (session_dir / "audio.flac").read_bytes()
    audio = decode(mine.with_suffix(".flac"))
    libri = read_wav(LIBRI).samples
    assert np.array_equal(audio[: len(libri)], libri) and not audio[len(libri) :].any()  # push adds 1 s of silence
    finals = json.loads(mine.with_suffix(".json").read_text())["finals"]
    assert finals == finals_on_disk(session_dir)
    assert wer(LIBRI_TEXT, " ".join(f["text"] for f in finals)) <= 0.15
    assert mine.with_suffix(".vtt").read_text().startswith("WEBVTT")


def test_token_record_mints_the_record_claim(tmp_path: Path) -> None:
    import subprocess

    from tokens import verify_control_token

    secret = new_control_secret()
    out = subprocess.run(
        [sys.executable, "-m", "roomscribe.cli", "--env-file", str(tmp_path / "none.env"), "token", "--user", "ivy",
         "--record"],
        env={**os.environ, "ROOMSCRIBE_CONTROL_SECRET": secret}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    claims = verify_control_token(secret, out.stdout.strip())
    assert claims.user == "ivy" and claims.allows("record") and not claims.allows("monitor")
