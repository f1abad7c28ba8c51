"""The bench's transports against a real server: a session streamed through the client library's
`Link`, every message recorded as a wire-schema struct. Latency figures are the benchmark's, not
asserted here."""

from __future__ import annotations

import pytest

from control.schema import FinalTranscript, ServerMessage, SessionEnded, SessionReady
from control_harness import ServerHandle
from roomscribe.bench.corpus import example_corpus
from roomscribe.bench.metrics import final_text, score_session
from roomscribe.bench.plan import SessionPlan, build_plan
from roomscribe.bench.transport import Endpoint, SessionRecord, Transport
from roomscribe.bench.wer import normalise
from roomscribe.client.events import Unknown

pytestmark = pytest.mark.timeout(120)


def _jfk_plan() -> SessionPlan:
    jfk = next(c for c in example_corpus().clips if c.id == "jfk")
    return build_plan("bench-transport", [jfk])


def _check(record: SessionRecord) -> None:
    assert record.error is None and record.completed, record
    assert all(isinstance(e, ServerMessage) and not isinstance(e, Unknown) for _, e in record.events), record.notes
    assert [type(e) for _, e in record.events[:1]] == [SessionReady]
    assert isinstance(record.events[-1][1], SessionEnded)
    assert record.of_type(FinalTranscript) and "fellow americans" in normalise(final_text(record))
    assert [o.lost for o in score_session(record)] == [False]


async def test_ws_transport_records_the_session_as_schema_structs(control: ServerHandle) -> None:
    from roomscribe.bench.ws_transport import WsTransport

    transport: Transport = WsTransport(Endpoint(control.server.url, control.token))
    _check(await transport.run_session(_jfk_plan(), "bench-ws", speed=4.0))


@pytest.mark.slow  # LiveKit paces the audio in real time (11 s of speech)
async def test_livekit_transport_records_the_session_as_schema_structs(lk_control: ServerHandle) -> None:
    from roomscribe.bench.livekit_transport import LiveKitTransport

    transport: Transport = LiveKitTransport(Endpoint(lk_control.server.url, lk_control.token))
    _check(await transport.run_session(_jfk_plan(), "bench-lk"))
