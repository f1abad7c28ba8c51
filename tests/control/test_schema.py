"""The wire schema is the whole contract: what the server sends fits it, the docs and the CLI show it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control import schema
from control.schema_docs import DOC, render
from control_harness import ServerHandle
from roomscribe.cli import main as cli_main
from roomscribe.client.audio_files import read_wav
from speech_samples import JFK, pcm_frames, silence

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
MESSAGE_TYPES = set(schema.CLIENT_MESSAGE_TYPES) | set(schema.SERVER_MESSAGE_TYPES)


def test_docs_tables_are_generated_from_the_schema() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert render(text) == text, "docs/protocol.md is out of date: run python -m control.schema_docs"
    for message_type in MESSAGE_TYPES:
        assert f"| `{message_type}` |" in text


def test_cli_prints_the_json_schema_of_both_directions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    defs = printed["$defs"]
    assert set(defs["ClientMessage"]["discriminator"]["mapping"]) == set(schema.CLIENT_MESSAGE_TYPES)
    assert set(defs["ServerMessage"]["discriminator"]["mapping"]) == set(schema.SERVER_MESSAGE_TYPES)
    final = defs["FinalTranscript"]
    assert set(final["required"]) >= {"type", "seq", "utterance_id", "text", "start", "end", "reason"}
    assert "participant" in defs["Status"]["properties"]


def test_every_raised_error_code_is_in_the_schema() -> None:
    raised: set[str] = set()
    for path in (ROOT / "control").glob("*.py"):
        raised |= set(re.findall(r'ProtocolError\(\s*"([a-z_.]+)"', path.read_text(encoding="utf-8")))
    assert raised, "the scan found no ProtocolError at all"
    assert raised <= set(schema.ERROR_CODES), raised - set(schema.ERROR_CODES)


def _listed_types(node: ast.AST) -> set[str]:
    """Message type strings written out in one tuple/list/set/dict literal."""
    if isinstance(node, ast.Dict):
        items = [k for k in node.keys if k is not None]
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = list(node.elts)
    else:
        return set()
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)} & MESSAGE_TYPES


def test_no_other_module_lists_message_types() -> None:
    """Lists of message types (handlers, replay, subscribable, event classes) come from the schema."""
    own = {ROOT / "control" / "schema.py", ROOT / "control" / "schema_docs.py"}
    offenders = []
    for path in [*(ROOT / "control").glob("*.py"), *(ROOT / "roomscribe" / "client").glob("*.py")]:
        if path in own:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            listed = _listed_types(node)
            if len(listed) >= 3:
                offenders.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}: {sorted(listed)}")
    assert not offenders, offenders


def _fits(message: dict[str, Any]) -> schema.ServerMessage:
    """The message read through the schema, with no field the schema does not declare."""
    return schema.decode_server_message(message, exact=True)


async def test_everything_a_ws_session_sends_fits_the_schema(control: ServerHandle) -> None:
    client = await control.connect("schema-ws")
    watcher = await control.connect("schema-ws")
    await watcher.send(type="subscribe", id="w", user="schema-ws")
    subscribed = await watcher.wait_type("subscribed", id="w")
    await client.send(type="session.start", id=1, audio={"sample_rate": 16000})
    await client.wait_type("session.ready", id=1)
    for frame in pcm_frames(np.concatenate([read_wav(JFK).samples[: 16000 * 3], silence(1.0)])):
        await client.ws.send_bytes(frame)
    await client.ws.send_bytes(b"\x00")  # odd length: an error
    await client.send(type="ping", id="p")
    await client.send(type="token.refresh", id="t")  # not a LiveKit session: an error
    await client.wait_type("error", id="t")
    await client.send(type="session.stop", id=2)
    await client.wait_type("session.ended")
    await watcher.wait_for(lambda e: e["type"] == "session.ended" and e.get("subscription_id"))
    await watcher.send(type="unsubscribe", id="u", subscription_id=subscribed["subscription_id"])
    await watcher.wait_type("unsubscribed", id="u")
    seen = {_fits(m).type for m in client.events + watcher.events}
    assert seen >= {"hello", "session.ready", "speech.start", "transcript.final", "speech.end", "pong", "error",
                    "session.ended", "subscribed", "unsubscribed"}
    forwarded = [m for m in map(_fits, watcher.events) if isinstance(m, schema.Forwardable)]
    assert forwarded and all(m.subscription_id == subscribed["subscription_id"] and m.user == "schema-ws" for m in forwarded)
    for c in (client, watcher):
        await c.close()


async def test_everything_a_livekit_session_sends_fits_the_schema(lk_control: ServerHandle) -> None:
    client = await lk_control.connect("schema-lk")
    await client.send(type="session.start", id=1)
    ready = _fits(await client.wait_type("session.ready", id=1, timeout=60))
    assert isinstance(ready, schema.SessionReady) and ready.livekit is not None and ready.audio is None
    await client.send(type="token.refresh", id="t")
    token = _fits(await client.wait_type("token", id="t"))
    assert isinstance(token, schema.Token) and token.seq > 0 and token.expires_at >= ready.livekit.expires_at
    await client.send(type="session.stop", id=2)
    await client.wait_type("session.ended", timeout=60)
    assert {_fits(m).type for m in client.events} >= {"hello", "session.ready", "publish.start", "token", "session.ended"}
    await client.close()


def test_session_events_given_as_dicts_are_checked_against_the_schema() -> None:
    from control.session import _numbered

    status = _numbered({"type": "status", "seq": 3, "code": "listening", "message": "m", "participant": "bob"})
    assert isinstance(status, schema.Status) and status.participant == "bob"
    with pytest.raises(TypeError, match="no field"):
        _numbered({"type": "status", "seq": 3, "code": "x", "message": "m", "undeclared": 1})
    with pytest.raises(TypeError):  # not a session event
        _numbered({"type": "pong", "seq": 3, "time": 1.0})


async def test_a_reply_that_does_not_fit_fails_its_request_on_the_client() -> None:
    import asyncio

    from roomscribe.client.control_client import ControlClient
    from roomscribe.client.errors import ClientError
    from roomscribe.client.events import Unknown

    client = ControlClient("ws://unused", "token")
    seen: list[object] = []
    client.on(seen.append)
    pending: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    client._requests["r1"] = pending  # type: ignore[assignment]  # the request table holds futures of events
    client._on_message({"type": "subscribed", "id": "r1", "subscription_id": "sub_1"})  # no session_id/user/events
    with pytest.raises(ClientError, match="does not fit"):
        await asyncio.wait_for(pending, 1)
    assert not seen  # like an `error` reply: the caller gets the exception instead
    client._on_message({"type": "speech.start", "seq": 1})  # not a request's reply: delivered as Unknown
    assert isinstance(seen[-1], Unknown) and seen[-1].error is not None and seen[-1].raw["seq"] == 1
