"""The page takes its message types from examples/web/protocol.js, generated from the wire schema
(no browser needed)."""

from __future__ import annotations

import re

import pytest

from browser_support import ROOT
from control import schema, schema_js

pytestmark = pytest.mark.timeout(10)
APP = ROOT / "examples" / "web" / "app.js"
MESSAGE_TYPES = set(schema.CLIENT_MESSAGE_TYPES) | set(schema.SERVER_MESSAGE_TYPES)
#: A quoted string where the page would name a message type: `type: '…'`, `case '…'`, `.type === '…'`.
_TYPE_LITERAL = re.compile(r"""(?:\btype\s*:\s*|\bcase\s+|\.type\s*[!=]==?\s*)['"`]([^'"`]+)['"`]""")
_TABLE_NAME = re.compile(r"\b(MessageType|RequestType)\.([A-Za-z_]\w*)")


def hand_written_types(source: str) -> list[str]:
    """Message types the script writes out as strings."""
    return [m[1] for m in _TYPE_LITERAL.finditer(source) if m[1] in MESSAGE_TYPES]


def unknown_names(source: str) -> list[str]:
    """`MessageType.X` / `RequestType.X` the schema has no class X for."""
    known = {"MessageType": {c.__name__ for c in schema.SERVER_MESSAGES}, "RequestType": {c.__name__ for c in schema.REQUESTS}}
    return [f"{table}.{name}" for table, name in _TABLE_NAME.findall(source) if name not in known[table]]


def test_protocol_js_is_generated_from_the_schema() -> None:
    text = schema_js.JS.read_text(encoding="utf-8")
    assert text == schema_js.render(), "examples/web/protocol.js is out of date: run python -m control.schema_docs"
    for message_type in MESSAGE_TYPES:
        assert f"'{message_type}'" in text


def test_the_page_names_message_types_only_through_protocol_js() -> None:
    source = APP.read_text(encoding="utf-8")
    assert "from './protocol.js'" in source
    assert hand_written_types(source) == []
    assert unknown_names(source) == []
    assert {table for table, _ in _TABLE_NAME.findall(source)} == {"MessageType", "RequestType"}


def test_the_checks_bite() -> None:
    old = "if (msg.type === 'hello') {}\nswitch (t) { case 'transcript.final': break; }\nsend({ type: 'session.stop' });"
    assert hand_written_types(old) == ["hello", "transcript.final", "session.stop"]
    assert hand_written_types("if (m.type === 'level') onLevel(m.rms);") == []  # the worklet's own messages
    assert unknown_names("MessageType.FinalTranscript; MessageType.Finl; RequestType.Hello") == [
        "MessageType.Finl",
        "RequestType.Hello",
    ]
