"""Voice commands end to end: real server on loopback, real model, real speech (ws transport)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from control_harness import RawClient, ServerHandle
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, pcm_frames, silence

pytestmark = pytest.mark.timeout(180)

#: Words the JFK clip says in one utterance. (Its pauses split "ask not what your country can do"
#: over two finals, "Ask not!" and "What your country can do for you.": a command is matched
#: within one final.)
JFK_PHRASE = "my fellow americans"
JFK_COMMANDS = [{"name": "jfk", "phrases": [JFK_PHRASE]}]


async def stream(client: RawClient, samples: np.ndarray, speed: float = 8.0, frame_ms: int = 20) -> None:
    """16 kHz PCM at `speed`× real time."""
    for frame in pcm_frames(samples, frame_ms=frame_ms):
        await client.ws.send_bytes(frame)
        await asyncio.sleep(frame_ms / 1000 / speed)


def jfk() -> np.ndarray:
    return np.concatenate([read_wav(JFK).samples, silence(1.0)])


async def start(control: ServerHandle, user: str, **options: Any) -> tuple[RawClient, dict[str, Any]]:
    client = await control.connect(user)
    await client.send(type="session.start", id="s", transport="ws", **options)
    return client, await client.wait_type("session.ready", id="s")


async def test_a_configured_phrase_in_real_speech_yields_a_command_that_a_monitor_sees(control: ServerHandle) -> None:
    monitor = await control.connect("alice")
    await monitor.send(type="subscribe", id="w", user="alice", events=["command"])
    await monitor.wait_type("subscribed", id="w")
    client, ready = await start(control, "alice", commands=JFK_COMMANDS)
    await stream(client, jfk())
    command = await client.wait_type("command", name="jfk")
    final = next(e for e in client.events if e["type"] == "transcript.final" and e["utterance_id"] == command["utterance_id"])
    assert command["seq"] == final["seq"] + 1, "the command comes right after the final that carried it"
    assert command["phrase"] == JFK_PHRASE and command["text"] == final["text"]
    assert final["start"] <= command["start"] < command["end"] <= final["end"]
    watched = await monitor.wait_type("command", name="jfk")
    assert watched["session_id"] == ready["session_id"] and watched["user"] == "alice" and watched["seq"] == command["seq"]
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    assert len(client.of_type("command")) == 1
    # The monitor asked for commands only.
    assert {e["type"] for e in monitor.events} == {"hello", "subscribed", "command"}
    await client.close()
    await monitor.close()


async def test_a_resume_replays_the_command_after_its_final(control: ServerHandle) -> None:
    first, ready = await start(control, "carol", commands=JFK_COMMANDS)
    await stream(first, jfk())
    command = await first.wait_type("command", name="jfk")
    second = await control.connect("carol")
    await second.send(type="session.start", id="r", resume={"session_id": ready["session_id"], "last_seq": 0})
    await second.wait_type("session.ready", id="r")
    replayed = await second.wait_type("command", name="jfk")
    assert replayed["seq"] == command["seq"]
    replay = [e for e in second.events if "seq" in e]
    index = replay.index(replayed)
    assert replay[index - 1]["type"] == "transcript.final" and replay[index - 1]["utterance_id"] == command["utterance_id"]
    await second.send(type="session.stop", id="stop")
    await second.wait_type("session.ended")
    assert len(second.of_type("command")) == 1
    await first.close()
    await second.close()


async def test_the_default_commands_stay_quiet_on_unrelated_speech(control: ServerHandle) -> None:
    client, _ = await start(control, "dave")  # no `commands`: the server's defaults (start_note, stop_note)
    await stream(client, jfk())
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    assert client.of_type("transcript.final")
    assert client.of_type("command") == []
    await client.close()


@pytest.mark.parametrize(
    ("commands", "says"),
    [
        ([{"name": f"c{i}", "phrases": ["go"]} for i in range(17)], "'commands'"),
        ([{"name": "Bad Name", "phrases": ["go"]}], "commands[0].name"),
        ([{"name": "a", "phrases": ["x" * 101]}], "commands[0].phrases[0]"),
        ([{"name": "a", "phrases": []}], "commands[0].phrases"),
        ([{"name": "a", "phrases": ["go"] * 5}], "commands[0].phrases"),
        ([{"name": "a"}], "commands[0].phrases"),
        ([{"name": "a", "phrases": ["?!"]}], "must have 1–8 words"),
        ([{"name": "a", "phrases": ["one two three four five six seven eight nine"]}], "must have 1–8 words"),
        ([{"name": "a", "phrases": ["go"]}, {"name": "a", "phrases": ["stop"]}], "defined twice"),
        ("start a new note", "'commands'"),
    ],
)
async def test_bad_commands_get_a_coded_error_and_the_socket_goes_on(control: ServerHandle, commands: Any, says: str) -> None:
    client = await control.connect("erin")
    await client.send(type="session.start", id="s", transport="ws", commands=commands)
    error = await client.wait_type("error", id="s")
    assert error["code"] == "commands.invalid" and says in error["message"], error
    await client.send(type="session.start", id="ok", transport="ws", commands=[])
    await client.wait_type("session.ready", id="ok")
    await client.close()


def _espeak(text: str, path: Path) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz int16."""
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(path), text], check=True, capture_output=True, timeout=30)
    audio = read_wav(path)
    samples = audio.samples.astype(np.float32) / 32768.0
    if audio.sample_rate != 16000:
        samples = soxr.resample(samples, audio.sample_rate, 16000)
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


async def test_default_commands_smoke_with_synthetic_speech(control: ServerHandle, tmp_path: Path) -> None:
    """A smoke test only (synthetic speech): the real-speech tests above are the ones that count."""
    if shutil.which("espeak-ng") is None:
        warnings.warn("espeak-ng is not installed: the default-commands smoke test is skipped", stacklevel=1)
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): default-commands smoke test SKIPPED")
    client, _ = await start(control, "frank")
    speech = np.concatenate([silence(0.5), _espeak("Start a new note.", tmp_path / "start.wav"), silence(1.5)])
    await stream(client, speech)
    command = await client.wait_type("command", name="start_note")
    assert command["phrase"] == "start a new note"
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    await client.close()
