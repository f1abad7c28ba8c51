"""Prometheus metrics of one server (`GET /metrics`), and the statistics a session logs when it ends.

Every metric object lives here, in a `Metrics` with its own CollectorRegistry (never the global
one: several servers in one process, as in the tests, keep theirs apart). The code around calls it
at a few choke points only: `observe_message` for every numbered session event (Session.emit),
`observe_pipeline_event` for the pipeline's events (end-of-speech → final latency), `errors` where
an `error` goes out, and `count_audio`. What is state rather than a count (open sockets, live
sessions, the model's queue) is read when scraped, from the callables given to `watch`.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.events import FinalTranscript as PipelineFinal
from agent.events import PipelineEvent
from control.schema import Command, FinalTranscript, InterimTranscript, Numbered, Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: End-of-speech → final latency buckets (seconds).
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class SessionStats:
    """What one session did, logged when it ends."""

    started: float = field(default_factory=time.monotonic)
    audio_s: float = 0.0
    finals: int = 0
    interims: int = 0
    interims_dropped: int = 0
    commands: int = 0

    def summary(self) -> str:
        return (
            f"{time.monotonic() - self.started:.1f} s, audio {self.audio_s:.1f} s, {self.finals} finals, "
            f"{self.interims} interims, {self.interims_dropped} interims dropped, {self.commands} commands"
        )

    def fields(self) -> dict[str, Any]:
        """The same as structured log fields."""
        return {
            "duration_s": round(time.monotonic() - self.started, 3),
            "audio_s": round(self.audio_s, 3),
            "finals": self.finals,
            "interims": self.interims,
            "interims_dropped": self.interims_dropped,
            "commands": self.commands,
        }


class Metrics:
    """The metrics of one server (or one worker process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sockets_opened = Counter("roomscribe_sockets_opened", "Control sockets accepted", registry=r)
        self.sessions_started = Counter(
            "roomscribe_sessions_started", "Sessions started, by transport", ["transport"], registry=r
        )
        self.audio_seconds = Counter(
            "roomscribe_audio_seconds", "Seconds of audio received, by transport", ["transport"], registry=r
        )
        self.finals = Counter("roomscribe_finals", "transcript.final events sent", registry=r)
        self.interims = Counter("roomscribe_interims", "transcript.interim events sent", registry=r)
        self.interims_dropped = Counter(
            "roomscribe_interims_dropped",
            "Interims dropped: reason=load (the model was behind), slow_reader (the socket read too slowly)",
            ["reason"],
            registry=r,
        )
        self.commands = Counter("roomscribe_commands", "Voice command events sent", registry=r)
        self.final_latency = Histogram(
            "roomscribe_final_latency_seconds",
            "Wall time from end-of-speech detection to the utterance's final",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.livekit_reconnects = Counter(
            "roomscribe_livekit_reconnects", "Times a session's LiveKit agent reconnected (livekit.recovered)", registry=r
        )
        self.errors = Counter("roomscribe_errors", "error messages sent (and refused upgrades), by code", ["code"], registry=r)
        self._state = _StateCollector()
        r.register(self._state)

    def watch(
        self,
        *,
        sockets: Callable[[], int] | None = None,
        sessions: Callable[[], Iterable[str]] | None = None,
        engine_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """What is read at each scrape: open sockets, the transports of live sessions, the model's stats."""
        if sockets is not None:
            self._state.sockets = sockets
        if sessions is not None:
            self._state.sessions = sessions
        if engine_stats is not None:
            self._state.engine_stats = engine_stats

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- choke points ------------------------------------------------------------------------------
    def count_audio(self, transport: str, seconds: float) -> None:
        if seconds > 0:
            self.audio_seconds.labels(transport).inc(seconds)

    def observe_pipeline_event(self, event: PipelineEvent) -> None:
        """A pipeline event where the model runs (serve, or a worker)."""
        if isinstance(event, PipelineFinal) and event.latency_s is not None:
            self.final_latency.observe(event.latency_s)


def observe_message(message: Numbered, stats: SessionStats, metrics: Metrics | None) -> None:
    """Count one numbered session event into its session's stats and the server's metrics."""
    if isinstance(message, FinalTranscript):
        stats.finals += 1
        if metrics is not None:
            metrics.finals.inc()
    elif isinstance(message, InterimTranscript):
        stats.interims += 1
        if metrics is not None:
            metrics.interims.inc()
    elif isinstance(message, Command):
        stats.commands += 1
        if metrics is not None:
            metrics.commands.inc()
    elif isinstance(message, Status):
        if message.code == "interims_dropped" and message.dropped:
            stats.interims_dropped += message.dropped
            if metrics is not None:
                metrics.interims_dropped.labels("load").inc(message.dropped)
        elif message.code == "livekit.recovered" and metrics is not None:
            metrics.livekit_reconnects.inc()


class _StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(self) -> None:
        self.sockets: Callable[[], int] | None = None
        self.sessions: Callable[[], Iterable[str]] | None = None
        self.engine_stats: Callable[[], dict[str, Any]] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.sockets is not None:
            gauge = GaugeMetricFamily("roomscribe_sockets_open", "Control sockets open now")
            gauge.add_metric([], self.sockets())
            yield gauge
        if self.sessions is not None:
            gauge = GaugeMetricFamily("roomscribe_sessions", "Sessions live now, by transport", labels=["transport"])
            by_transport = Tally(self.sessions())
            for transport in sorted({"ws", "livekit", *by_transport}):
                gauge.add_metric([transport], by_transport.get(transport, 0))
            yield gauge
        if self.engine_stats is not None:
            yield from _engine_metrics(self.engine_stats())


def _engine_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    """The model's queue and speed (agent.asr.AsrEngine.stats)."""
    depth = GaugeMetricFamily("roomscribe_decode_queue_depth", "Decode jobs waiting for the model, by kind", labels=["kind"])
    depth.add_metric(["final"], stats.get("pending_finals", 0))
    depth.add_metric(["interim"], stats.get("pending_interims", 0))
    yield depth
    lag = GaugeMetricFamily("roomscribe_decode_queue_lag_seconds", "How long the oldest waiting final has waited")
    lag.add_metric([], stats.get("oldest_final_wait_s", 0.0))
    yield lag
    busy, audio = float(stats.get("busy_s", 0.0)), float(stats.get("decoded_audio_s", 0.0))
    busy_total = CounterMetricFamily("roomscribe_asr_busy_seconds", "Wall time the model spent decoding")
    busy_total.add_metric([], busy)
    yield busy_total
    audio_total = CounterMetricFamily("roomscribe_asr_audio_seconds", "Seconds of audio the model decoded")
    audio_total.add_metric([], audio)
    yield audio_total
    rtf = GaugeMetricFamily(
        "roomscribe_asr_real_time_factor", "Decode time over audio time since start (rate() of the two counters: recent)"
    )
    rtf.add_metric([], busy / audio if audio > 0 else 0.0)
    yield rtf
