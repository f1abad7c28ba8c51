"""`roomscribe bench --soak`: real-time sessions and idle sockets on one server for minutes.

A real control server (a `roomscribe serve` subprocess by default, with caps set to fit this load
whatever the server's defaults are) gets `sessions` ws-transport sessions, each streaming the
bundled sample speech (LibriSpeech, JFK, … with 1 s of silence between clips) on repeat at
real-time pace for `minutes`, staggered by `stagger_s`, plus `idle_sockets` authenticated control
sockets that never start a session (each must still answer a `ping` at the end). Reported:

- the server's RSS before the sessions start (after a warm-up session), when they end, its peak,
  the growth per minute from start to end, and the slope of a line fitted to the RSS samples of
  the second half (the steady state: a leak shows here, the sessions' own buffers do not);
- every clip sent against the finals received (a clip is lost when no final overlaps it; the
  bench's matching, `roomscribe.bench.metrics`), and the server's utterances (`speech.start`),
  finals and `speech.end` per session;
- end of speech → final p50/p95 over all clips;
- errors: `error` events, sessions that did not end cleanly, idle sockets closed early or silent.

    roomscribe bench --soak                 # 10 minutes, 8 sessions, 50 idle sockets
    roomscribe bench --soak --minutes 2 --json soak.json
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import numpy as np

from control.schema import FinalTranscript, Ping, Pong, SpeechEnd, SpeechStart
from roomscribe.bench.corpus import Clip, example_corpus
from roomscribe.bench.metrics import percentile, score_session, summarise
from roomscribe.bench.plan import SessionPlan, build_plan
from roomscribe.bench.runner import run_sessions
from roomscribe.bench.server import BenchServer, InProcessServer, SubprocessServer, unknown_settings
from roomscribe.bench.transport import Endpoint, SessionRecord, control_link
from roomscribe.bench.ws_transport import WsTransport
from roomscribe.client.events import parse_event

Progress = Callable[[str], None]
GAP_S = 1.0  # silence between clips: each clip ends its utterance


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    sessions: int = 8
    idle_sockets: int = 50
    server: str = "subprocess"  # "subprocess" | "inprocess"
    stagger_s: float = 0.75  # between session starts, so the finals do not all fall together
    sample_s: float = 10.0  # between RSS samples
    warm_up: bool = True  # one short session before the start RSS is read

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0


def server_overrides(cfg: SoakConfig) -> dict[str, Any]:
    """The server settings of a soak, explicit so that default caps never decide the outcome.
    Fields a server version does not have are skipped (and reported)."""
    horizon = cfg.duration_s + 300.0
    return {
        "audio_transport": "ws",  # no LiveKit dev server: the soak streams over the control socket
        "max_sessions": cfg.sessions + 4,
        "max_sockets": cfg.sessions + cfg.idle_sockets + 16,
        "max_sockets_per_user": 4,
        "start_timeout_s": horizon,  # the idle sockets never start a session
        "max_session_s": horizon,
    }


def soak_plan(name: str, clips: Sequence[Clip], duration_s: float, first: int = 0) -> SessionPlan:
    """The clips on repeat (starting at `first`), as many as fit in `duration_s` (at least one)."""
    chosen: list[Clip] = []
    total = 0.5 + 1.5  # build_plan's lead and tail
    while not chosen or total + GAP_S + clips[(first + len(chosen)) % len(clips)].duration_s <= duration_s:
        clip = clips[(first + len(chosen)) % len(clips)]
        total += clip.duration_s + (GAP_S if chosen else 0.0)
        chosen.append(clip)
    return build_plan(name, chosen, gap_s=GAP_S)


@dataclass
class IdleSocket:
    """What one idle control socket saw."""

    user: str
    hello: bool = False
    answered_ping: bool = False
    closed_early: str | None = None  # why it closed before the end, if it did


async def hold_idle_socket(
    http: aiohttp.ClientSession, endpoint: Endpoint, user: str, opened: asyncio.Future[None], stop: asyncio.Event
) -> IdleSocket:
    """Connect, read `hello`, then only read (the server's heartbeats are answered) until `stop`;
    then `ping` and wait for the `pong`. The socket is the client library's `Link` (not a
    `ControlClient`, whose heartbeat would make the socket busy and whose reconnect would hide an
    early close)."""
    rec = IdleSocket(user)
    loop = asyncio.get_running_loop()
    pong: asyncio.Future[None] = loop.create_future()
    try:
        async with control_link(endpoint, user, http=http) as link:
            rec.hello = True  # the link opens once `hello` has arrived
            if not opened.done():
                opened.set_result(None)

            async def read() -> None:
                async for raw in link.messages():
                    if isinstance(parse_event(raw), Pong) and not pong.done():
                        pong.set_result(None)
                if not stop.is_set():
                    rec.closed_early = f"closed by the server (code {link.ws.close_code})"

            reader = asyncio.create_task(read())
            await stop.wait()
            if not reader.done():
                await link.send_request(Ping(id="soak"))
                try:
                    await asyncio.wait_for(asyncio.shield(pong), 10.0)
                    rec.answered_ping = True
                except TimeoutError:
                    pass
            reader.cancel()
    except (aiohttp.ClientError, TimeoutError, ValueError, RuntimeError) as exc:  # RuntimeError: the client's errors
        rec.closed_early = rec.closed_early or f"{type(exc).__name__}: {exc}"
    finally:
        if not opened.done():
            opened.set_result(None)
    return rec


async def sample_rss(server: BenchServer, t0: float, every_s: float, stop: asyncio.Event) -> list[tuple[float, float]]:
    """(seconds since t0, RSS MB) every `every_s` until `stop`."""
    samples: list[tuple[float, float]] = []
    while True:
        samples.append((round(time.monotonic() - t0, 1), round(server.memory()["rss"] / 2**20, 1)))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return samples
        except TimeoutError:
            continue


def steady_slope(samples: Sequence[tuple[float, float]], skip_s: float) -> float | None:
    """MB per minute of a line fitted to the samples from `skip_s` on (None for fewer than 3)."""
    pts = [(t, m) for t, m in samples if t >= skip_s]
    if len(pts) < 3:
        return None
    t, m = np.array(pts).T
    return round(float(np.polyfit(t / 60.0, m, 1)[0]), 2)


def server_counts(records: Sequence[SessionRecord]) -> dict[str, Any]:
    """Per session: clips sent and the server's speech.start / transcript.final / speech.end."""
    rows: list[dict[str, Any]] = []
    for r in records:
        kinds = Counter(type(e) for _, e in r.events)
        rows.append({"user": r.user, "clips_sent": len(r.plan.clips), "utterances": kinds[SpeechStart],
                     "finals": kinds[FinalTranscript], "speech_ends": kinds[SpeechEnd]})  # fmt: skip
    total = {k: sum(row[k] for row in rows) for k in ("clips_sent", "utterances", "finals", "speech_ends")}
    return {**total, "per_session": rows}


def latency_spread(records: Sequence[SessionRecord]) -> dict[str, Any]:
    """End of speech → final p50/p95/max per session and per minute of session audio (where and
    when a tail of late finals came from)."""
    r3 = lambda x: None if x is None else round(x, 3)  # noqa: E731
    per_session, per_minute = {}, {}
    by_minute: dict[int, list[float]] = {}
    for r in records:
        lat = []
        for clip, outcome in zip(r.plan.clips, score_session(r), strict=True):
            if outcome.final_latency_s is not None:
                lat.append(outcome.final_latency_s)
                by_minute.setdefault(int(clip.end_s // 60), []).append(outcome.final_latency_s)
        per_session[r.user] = [r3(percentile(lat, 50)), r3(percentile(lat, 95)), r3(max(lat, default=None))]
    for minute in sorted(by_minute):
        xs = by_minute[minute]
        per_minute[str(minute)] = [r3(percentile(xs, 50)), r3(percentile(xs, 95)), r3(max(xs))]
    return {"per_session_p50_p95_max": per_session, "per_minute_p50_p95_max": per_minute}


async def run_soak(cfg: SoakConfig, *, engine: Any = None, progress: Progress = print) -> dict[str, Any]:
    """Run the soak; returns plain JSON-able figures (see the module docstring)."""
    overrides = server_overrides(cfg)
    server: BenchServer
    if cfg.server == "subprocess":
        server = SubprocessServer(overrides=overrides)
    elif cfg.server == "inprocess":
        server = InProcessServer(engine, overrides=overrides)
    else:
        raise ValueError(f"unknown server mode {cfg.server!r}")
    clips = example_corpus().clips
    plans = [soak_plan(f"soak-{i}", clips, cfg.duration_s, first=i) for i in range(cfg.sessions)]
    load0 = os.getloadavg()[0]
    progress(f"starting the server ({server.scope})…")
    await server.start()
    try:
        transport = WsTransport(server.endpoint)
        if cfg.warm_up:
            progress("warm-up session…")
            await transport.run_session(build_plan("soak-warm-up", clips[-1:]), "soak-warm-up")
        async with aiohttp.ClientSession() as http:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            opened = [loop.create_future() for _ in range(cfg.idle_sockets)]
            idle_tasks = [
                asyncio.create_task(hold_idle_socket(http, server.endpoint, f"soak-idle-{i}", opened[i], stop))
                for i in range(cfg.idle_sockets)
            ]
            if opened:
                await asyncio.wait_for(asyncio.gather(*opened), 60.0)
            progress(f"{cfg.idle_sockets} idle sockets open; {cfg.sessions} real-time sessions for {cfg.minutes:g} min…")
            mem0, cpu0, t0 = server.memory(), server.cpu_seconds(), time.monotonic()
            stop_sampling = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(server, t0, cfg.sample_s, stop_sampling))
            records = await run_sessions(transport, plans, "soak-rt", delays=[i * cfg.stagger_s for i in range(cfg.sessions)])
            wall = time.monotonic() - t0
            mem1, cpu1 = server.memory(), server.cpu_seconds()
            stop_sampling.set()
            samples = await sampler
            stop.set()
            idle = await asyncio.gather(*idle_tasks)
    finally:
        await server.stop()
    summary = summarise(records)
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    growth = (mem1["rss"] - mem0["rss"]) / 2**20 / (wall / 60.0) if wall else 0.0
    return {
        "config": asdict(cfg),
        "server": {"scope": server.scope, "settings": overrides, "settings_not_in_this_version": unknown_settings(overrides)},
        "loadavg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "wall_s": round(wall, 1),
        "audio_s": round(sum(p.duration_s for p in plans), 1),
        "rss_mb": {
            "start": mb(mem0["rss"]),
            "end": mb(mem1["rss"]),
            "peak": mb(mem1.get("peak_rss", mem1["rss"])),
            "growth_per_min": round(growth, 2),
            "second_half_slope_per_min": steady_slope(samples, wall / 2),
            "samples": samples,
        },
        "server_cpu_s": round(cpu1 - cpu0, 1),
        "server_cores_used": round((cpu1 - cpu0) / wall, 2) if wall else None,
        "counts": server_counts(records),
        "clips": summary["clips"],
        "lost": summary["lost"],
        "lost_clips": summary["lost_clips"],
        "final_latency_s": summary["final_latency_s"],
        "final_latency_spread_s": latency_spread(records),
        "client_send_lateness_s": summary["client_send_lateness_s"],
        "status_notices": summary["status_notices"],
        "errors": summary["errors"],
        "session_errors": summary["session_errors"],
        "incomplete_sessions": summary["incomplete_sessions"],
        "idle_sockets": {
            "opened": sum(s.hello for s in idle),
            "answered_ping_at_end": sum(s.answered_ping for s in idle),
            "closed_early": [f"{s.user}: {s.closed_early}" for s in idle if s.closed_early],
        },
    }


def problems(result: dict[str, Any]) -> list[str]:
    """What went wrong in a soak (empty: nothing)."""
    out = []
    counts, idle = result["counts"], result["idle_sockets"]
    if result["lost"]:
        out.append(f"{result['lost']} of {result['clips']} clips got no final")
    if counts["utterances"] != counts["speech_ends"]:
        out.append(f"{counts['utterances']} speech.start but {counts['speech_ends']} speech.end")
    if result["errors"]:
        out.append(f"error events: {result['errors']}")
    if result["session_errors"] or result["incomplete_sessions"]:
        why = Counter(e.rstrip(": ") for e in result["session_errors"])  # TimeoutError: no session.ended in time
        out.append(f"{len(result['incomplete_sessions'])} session(s) did not end cleanly ({dict(why)})")
    n = result["config"]["idle_sockets"]
    if idle["opened"] != n or idle["answered_ping_at_end"] != n or idle["closed_early"]:
        out.append(f"idle sockets: {idle['opened']}/{n} opened, {idle['answered_ping_at_end']}/{n} answered at the end, "
                   f"closed early: {idle['closed_early'][:3]}")  # fmt: skip
    return out


def render(result: dict[str, Any], command: str) -> str:
    """The soak's figures as text, with the command that produced them."""
    cfg, rss, c, lat = result["config"], result["rss_mb"], result["counts"], result["final_latency_s"]
    load = result["loadavg_1m_before_after"]
    idle = result["idle_sockets"]
    lines = [
        f"command: {command}",
        f"machine: {result['cpus']} CPUs, load {load[0]} → {load[1]}; server: {result['server']['scope']}",
        (f"load: {cfg['sessions']} real-time ws sessions ({result['audio_s']:.0f} s of audio in all) + "
         f"{cfg['idle_sockets']} idle sockets for {result['wall_s'] / 60:.1f} min"),
        (f"server RSS: {rss['start']} MB at start → {rss['end']} MB at end (peak {rss['peak']} MB): "
         f"{rss['growth_per_min']:+.2f} MB/min; over the second half {_fmt(rss['second_half_slope_per_min'], '{:+.2f} MB/min')}"),
        f"server CPU: {result['server_cpu_s']} s ({result['server_cores_used']} cores)",
        (f"utterances: {c['clips_sent']} clips sent, {result['clips'] - result['lost']} with a final, {result['lost']} lost; "
         f"server: {c['utterances']} speech.start, {c['finals']} finals, {c['speech_ends']} speech.end"),
        (f"end of speech → final: p50 {_fmt(lat['p50'], '{:.3f} s')}, p95 {_fmt(lat['p95'], '{:.3f} s')}, "
         f"max {_fmt(lat['max'], '{:.3f} s')} ({lat['n']} clips)"),
        "  by minute of session audio, p50/p95 s: " + ", ".join(
            f"{m}: {v[0]}/{v[1]}" for m, v in result["final_latency_spread_s"]["per_minute_p50_p95_max"].items()),
        "  by session, p95 s: " + ", ".join(
            f"{v[1]}" for v in result["final_latency_spread_s"]["per_session_p50_p95_max"].values()),
        (f"idle sockets: {idle['opened']} opened, {idle['answered_ping_at_end']} answered a ping at the end, "
         f"{len(idle['closed_early'])} closed early"),
        f"status notices: {result['status_notices'] or 'none'}",
    ]
    skipped = result["server"]["settings_not_in_this_version"]
    if skipped:
        lines.append(f"server settings this version does not have (skipped): {', '.join(skipped)}")
    found = problems(result)
    lines.append("errors: " + ("; ".join(found) if found else "none"))
    if found and max(load) > result["cpus"]:
        lines.append(f"  (the machine was oversubscribed: load {max(load)} on {result['cpus']} CPUs, the server got "
                     f"{result['server_cores_used']} cores; on a loaded machine these figures measure the machine)")
    return "\n".join(lines)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else spec.format(x)
