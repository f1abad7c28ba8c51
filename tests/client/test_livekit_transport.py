"""The LiveKit transport from the client side: `roomscribe push --transport livekit` publishes real
speech as the session's mic track with the `livekit` SDK through the embedded dev server.

The pushing client runs in its own process, as a real client does (a publisher sharing the
server's event loop underruns its real-time audio queue whenever that loop stalls), with a 500 ms
SDK queue because test machines are often heavily loaded: a publisher starved of CPU for longer
than its queue leaves a gap that WebRTC conceals, garbling a word. Hence also the looser WER.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from roomscribe.client.control_client import ControlClient
from roomscribe.client.livekit_publisher import LiveKitPublisher
from speech_samples import JFK, JFK_TEXT, ROOT, wer

pytestmark = pytest.mark.timeout(90)

PUSH = "import sys; from roomscribe.client.cli import push_main; sys.exit(push_main(sys.argv[1:]))"


async def test_push_over_livekit_prints_the_transcript(lk_control) -> None:
    env = {**os.environ, "ROOMSCRIBE_CONTROL_SECRET": lk_control.secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSH, str(JFK), "--transport", "livekit", "--url", lk_control.server.url,
        "--no-interim", "--queue-ms", "500", "--env-file", "/nonexistent", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 75)
    text = out.decode()
    assert proc.returncode == 0, (text, err.decode()[-3000:])
    finals = [line.split("] ", 1)[1] for line in text.splitlines() if line.startswith("[")]
    assert wer(JFK_TEXT, " ".join(finals)) <= 0.15, text
    assert "session ended (stopped)" in text


async def test_publisher_follows_gating_and_token_events() -> None:
    client = ControlClient("ws://unused", "token")
    publisher = LiveKitPublisher(client)
    ready = {"type": "session.ready", "session_id": "s_1", "transport": "livekit", "protocol": 1, "room": "r",
             "resumed": False, "last_seq": 0, "livekit": {"url": "ws://lk", "room": "r", "identity": "a", "token": "t1",
                                                          "expires_at": 100, "publish_gating": "vad"}}
    client._on_message(ready)
    assert (publisher.url, publisher.token, publisher.expires_at) == ("ws://lk", "t1", 100)
    client._on_message({"type": "publish.start", "seq": 1})
    assert publisher._wanted.is_set()
    client._on_message({"type": "token", "seq": 2, "token": "t2", "expires_at": 400})
    client._on_message({**ready, "resumed": True, "last_seq": 2})  # a resume repeats the old token
    assert publisher.token == "t2"
    client._on_message({"type": "status", "seq": 3, "code": "listening", "message": "m"})
    client._on_message({"type": "publish.stop", "seq": 4})
    assert publisher._heard.is_set() and not publisher._wanted.is_set()
    await publisher.close()
