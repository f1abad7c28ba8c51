"""`GET /metrics`: Prometheus text that parses, and counters that move as a real session runs."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.metrics import Metrics, SessionStats, observe_message
from control.schema import Command, Status
from control_harness import ServerHandle, serving
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, pcm_frames, silence

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(control: ServerHandle) -> Samples:
    async with control.http.get(control.server.http_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("roomscribe_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_parse_and_move_as_a_session_runs(control: ServerHandle, engine) -> None:
    before = await scrape(control)
    assert value(before, "roomscribe_sessions", transport="ws") == 0
    client = await control.connect("alice")
    await client.ws.send_str("not json")
    await client.wait_type("error")
    await client.send(type="session.start", id="s", transport="ws")
    await client.wait_type("session.ready", id="s")
    samples = np.concatenate([read_wav(JFK).samples, silence(1.0)])
    for frame in pcm_frames(samples):
        await client.ws.send_bytes(frame)
        await asyncio.sleep(0.02 / 8)
    await client.wait_type("transcript.final")
    during = await scrape(control)
    assert value(during, "roomscribe_sockets_open") == 1
    assert value(during, "roomscribe_sockets_opened_total") == 1
    assert value(during, "roomscribe_sessions", transport="ws") == 1
    assert value(during, "roomscribe_sessions_started_total", transport="ws") == 1
    assert value(during, "roomscribe_errors_total", code="bad_json") == 1
    assert value(during, "roomscribe_audio_seconds_total", transport="ws") == pytest.approx(len(samples) / 16000, abs=0.05)
    assert value(during, "roomscribe_finals_total") >= 1
    assert value(during, "roomscribe_final_latency_seconds_count") >= 1
    assert value(during, "roomscribe_final_latency_seconds_sum") > 0
    # The model is shared by every test's server: its counters only rise.
    assert value(during, "roomscribe_asr_audio_seconds_total") > value(before, "roomscribe_asr_audio_seconds_total")
    assert value(during, "roomscribe_asr_busy_seconds_total") > value(before, "roomscribe_asr_busy_seconds_total")
    assert value(during, "roomscribe_asr_real_time_factor") > 0
    assert ("roomscribe_decode_queue_depth", frozenset({("kind", "final")})) in during
    assert ("roomscribe_decode_queue_lag_seconds", frozenset()) in during
    assert ("roomscribe_livekit_reconnects_total", frozenset()) in during

    # Another server in the same process keeps its own registry.
    async with serving(engine) as other:
        assert value(await scrape(other), "roomscribe_finals_total") == 0

    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    after = await scrape(control)
    assert value(after, "roomscribe_sessions", transport="ws") == 0
    assert value(after, "roomscribe_finals_total") == len(client.of_type("transcript.final"))
    assert value(after, "roomscribe_interims_total") == len(client.of_type("transcript.interim"))
    await client.close()


async def test_a_session_s_statistics_are_logged_when_it_ends(control: ServerHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client = await control.connect("bob")
    await client.send(type="session.start", id="s", transport="ws")
    ready = await client.wait_type("session.ready", id="s")
    for frame in pcm_frames(np.concatenate([read_wav(JFK).samples, silence(1.0)])):
        await client.ws.send_bytes(frame)
        await asyncio.sleep(0.02 / 8)
    await client.send(type="session.stop", id="stop")
    await client.wait_type("session.ended")
    ended = next(r for r in caplog.records if r.getMessage().startswith(f"session {ready['session_id']} ended"))
    stats = ended.stats  # type: ignore[attr-defined]  # set through `extra`
    assert stats["reason"] == "stopped" and stats["finals"] == len(client.of_type("transcript.final"))
    assert stats["audio_s"] == pytest.approx(12.0, abs=0.1) and stats["duration_s"] > 0
    await client.close()
    async with asyncio.timeout(10):
        while not any(r.getMessage().startswith("control socket closed for user 'bob'") for r in caplog.records):  # noqa: ASYNC110  # only the log line says the server is done
            await asyncio.sleep(0.05)
    closed = next(r for r in caplog.records if r.getMessage().startswith("control socket closed for user 'bob'"))
    assert closed.stats["messages_sent"] >= 3  # type: ignore[attr-defined]  # set through `extra`


def test_status_events_count_as_dropped_interims_and_livekit_reconnects() -> None:
    metrics, stats = Metrics(), SessionStats()
    observe_message(Status(seq=1, code="interims_dropped", message="behind", dropped=3, dropped_total=3), stats, metrics)
    observe_message(Status(seq=2, code="livekit.recovered", message="back"), stats, metrics)
    observe_message(Command(seq=3, name="a", phrase="p", text="p", utterance_id="u1", start=0.0, end=1.0), stats, metrics)
    assert (stats.interims_dropped, stats.commands) == (3, 1)
    text = metrics.render().decode()
    assert 'roomscribe_interims_dropped_total{reason="load"} 3.0' in text
    assert "roomscribe_livekit_reconnects_total 1.0" in text and "roomscribe_commands_total 1.0" in text
