"""Monitor subscriptions on a real server: allowed watchers see events, others are refused."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from roomscribe.client.audio_files import read_wav
from speech_samples import LIBRI, LIBRI_TEXT, pcm_frames, silence, wer

pytestmark = pytest.mark.timeout(120)


async def speak(client) -> None:
    frames = pcm_frames(np.concatenate([read_wav(LIBRI).samples, silence(1.0)]))
    for frame in frames:
        await client.ws.send_bytes(frame)
        await asyncio.sleep(0.0025)  # 8× real time


async def test_monitor_sees_another_users_finals_and_others_are_refused(control) -> None:
    speaker = await control.connect("alice")
    monitor = await control.connect(token=control.token("ops", permissions=("monitor",)))
    stranger = await control.connect("mallory")

    await monitor.send(type="subscribe", id="m", user="alice", events=["transcript.final", "session.ended"])
    subscribed = await monitor.wait_type("subscribed", id="m")
    await stranger.send(type="subscribe", id="x", user="alice")
    refused = await stranger.wait_type("error", id="x")
    assert refused["code"] == "not_allowed"

    await speaker.send(type="session.start")
    ready = await speaker.wait_type("session.ready")
    await stranger.send(type="subscribe", id="y", session_id=ready["session_id"])
    assert (await stranger.wait_type("error", id="y"))["code"] == "not_allowed"

    await speak(speaker)
    await speaker.send(type="session.stop")
    await speaker.wait_type("session.ended")
    seen = await monitor.wait_type("transcript.final", timeout=30)
    assert seen["subscription_id"] == subscribed["subscription_id"]
    assert seen["session_id"] == ready["session_id"] and seen["user"] == "alice"
    assert wer(LIBRI_TEXT, seen["text"]) <= 0.15
    await monitor.wait_type("session.ended")
    assert not monitor.of_type("transcript.interim"), "the monitor asked for finals only"
    assert not monitor.binary, "audio is never sent to subscribers"
    assert not [e for e in stranger.events if e["type"].startswith("transcript")]
    for client in (speaker, monitor, stranger):
        await client.close()


async def test_user_watches_own_session_and_unsubscribes(control) -> None:
    speaker = await control.connect("dana")
    await speaker.send(type="session.start")
    ready = await speaker.wait_type("session.ready")
    watcher = await control.connect("dana")
    await watcher.send(type="subscribe", id=1, session_id=ready["session_id"], events=["speech.start"])
    sub = await watcher.wait_type("subscribed", id=1)
    await watcher.send(type="unsubscribe", id=2, subscription_id=sub["subscription_id"])
    await watcher.wait_type("unsubscribed", id=2)
    await speak(speaker)
    await speaker.wait_type("transcript.final", timeout=30)
    assert not watcher.of_type("speech.start")
    await watcher.send(type="unsubscribe", id=3, subscription_id=sub["subscription_id"])
    assert (await watcher.wait_type("error", id=3))["code"] == "subscription.not_found"
    await watcher.send(type="subscribe", id=4, session_id=ready["session_id"], events=["audio"])
    assert (await watcher.wait_type("error", id=4))["code"] == "bad_request"
    for client in (speaker, watcher):
        await client.close()
