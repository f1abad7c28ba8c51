"""Recording a multi-user LiveKit session: one audio file per participant, every final with its speaker.
Real speech published with the official SDK through the embedded dev server."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import av
import pytest

from control_harness import ServerHandle, start_livekit_control
from livekit_publisher import publish_wav_subprocess
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, JFK_TEXT, LIBRI, LIBRI_TEXT, wer
from tokens import mint_client_token

pytestmark = pytest.mark.timeout(150)


def seconds_of(flac: bytes) -> float:
    with av.open(io.BytesIO(flac), "r") as container:
        samples: int = sum(frame.samples for frame in container.decode(audio=0))
    return samples / 16000


async def test_a_recorded_room_keeps_each_speakers_audio_and_finals(engine, tmp_path: Path) -> None:
    server = await start_livekit_control(engine, recordings_dir=str(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            handle = ServerHandle(server, http)
            token = handle.token("lead", permissions=("multi_user", "record"))
            client = await handle.connect(token=token)
            await client.send(type="session.start", room="retro", record=True)
            ready = await client.wait_type("session.ready")
            settings = server.settings
            speakers = {"ann": JFK, "ben": LIBRI}
            await asyncio.gather(*(
                publish_wav_subprocess(
                    ready["livekit"]["url"],
                    mint_client_token(settings.livekit_api_key, settings.livekit_api_secret, identity=who, room="retro").token,
                    path,
                    speak_after=client.heard(who),
                )
                for who, path in speakers.items()
            ))  # fmt: skip
            await client.send(type="session.stop")
            recording = await client.wait_type("recording.ready", timeout=60)
            await client.wait_type("session.ended")
            finals = client.of_type("transcript.final")
            assert sorted(recording["participants"]) == ["ann", "ben"]

            directory = tmp_path / ready["session_id"]
            on_disk = [json.loads(line) for line in (directory / "transcript.jsonl").read_text().splitlines()]
            assert on_disk == finals
            manifest = json.loads((directory / "manifest.json").read_text())
            assert manifest["transport"] == "livekit" and manifest["multi_user"] is True and manifest["room"] == "retro"
            files = {entry["participant"]: entry for entry in manifest["audio"]}
            assert sorted(files) == ["ann", "ben"] and len({e["file"] for e in files.values()}) == 2
            for who, path in speakers.items():
                said = [f for f in finals if f["participant"] == who]
                assert wer(JFK_TEXT if who == "ann" else LIBRI_TEXT, " ".join(f["text"] for f in said)) <= 0.15
                status, body = await _get(handle, f"{recording['url']}?participant={who}", token)
                assert status == 200
                heard = seconds_of(body)
                assert heard == pytest.approx(files[who]["duration"], abs=0.01)
                # Its file holds the speech (after the silence published until the agent listened),
                # and its finals' times are times in it.
                assert heard >= len(read_wav(path).samples) / 16000
                assert max(f["end"] for f in said) <= heard + 0.05
            assert recording["duration"] == max(e["duration"] for e in files.values())
            status, body = await _get(handle, f"{recording['transcript_url']}?format=vtt", token)
            assert status == 200 and "<v ann>" in body.decode() and "<v ben>" in body.decode()
            status, body = await _get(handle, f"{recording['url']}?participant=carl", token)
            assert status == 404 and json.loads(body)["error"]["code"] == "recording.not_found"
            await client.close()
    finally:
        await server.stop()


async def _get(handle: ServerHandle, path: str, token: str) -> tuple[int, bytes]:
    async with handle.http.get(handle.server.http_url + path, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.read()
