"""The client names no message type by hand: it sends control/schema.py's request structs and
tells received messages apart by their struct class or `tag_of` (issue 10). Its own notices are
not wire messages; their codes are listed once, in `NoticeCode`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import roomscribe.client
from control.schema import Ping, Pong, Unsubscribe
from control_harness import ServerHandle
from message_literals import MESSAGE_TYPES, hand_written_types, scan_package
from roomscribe.client.control_client import ControlClient
from roomscribe.client.errors import ServerError
from roomscribe.client.events import NoticeCode

pytestmark = pytest.mark.timeout(10)

CLIENT = Path(roomscribe.client.__file__).parent
#: The client's own notice codes: they look like message types (`session.resumed`) but are not.
NOTICE_CODES = frozenset(str(code) for code in NoticeCode)


def test_the_client_writes_no_message_type_by_hand() -> None:
    assert scan_package(CLIENT, allowed=NOTICE_CODES) == {}


def test_notice_codes_are_not_message_types_and_are_written_only_in_events() -> None:
    assert not NOTICE_CODES & MESSAGE_TYPES
    elsewhere = {
        p.name: sorted(found)
        for p in CLIENT.glob("*.py")
        if p.name != "events.py"
        and (found := {n.value for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                       if isinstance(n, ast.Constant) and n.value in NOTICE_CODES})
    }  # fmt: skip
    assert elsewhere == {}


def test_the_scan_bites_on_the_forms_the_client_used_before() -> None:
    before = """
def ping_message(self):
    return {"type": "ping", "id": self._new_id("p")}
pong_id = str(raw.get("id")) if kind == "pong" else None
client.on(lambda event: ended.set(), ("session.ended",))
if hello.get("type") != "hello":
    raise ValueError
request = {"type": "session.resume"}
"""
    found = hand_written_types(ast.parse(before), allowed=NOTICE_CODES)
    assert found == [
        "line 3: 'type'", "line 3: 'ping'", "line 4: 'pong'", "line 5: 'session.ended'", "line 6: 'type'",
        "line 6: 'hello'", "line 8: 'type'", "line 8: 'session.resume'",
    ]  # fmt: skip
    # what is not a message type passes: notice codes, other call arguments, docstrings
    fine = '"""Answers a `ping`."""\nnotice(NoticeCode.SESSION_RESUMED)\ncode = "session.resumed"\ngit("status")\n'
    assert hand_written_types(ast.parse(fine), allowed=NOTICE_CODES) == []


async def test_request_takes_a_schema_struct_or_a_json_object_checked_against_the_schema(control: ServerHandle) -> None:
    async with ControlClient(control.server.url, control.token("ivy")) as client:
        assert isinstance(await client.request(Ping()), Pong)
        assert isinstance(await client.request({"type": "ping"}), Pong)  # the JSON object form still works
        with pytest.raises(ServerError) as refused:
            await client.request({"type": "session.resume"})
        assert refused.value.code == "unknown_type"  # refused by the client with the code the server would send
        with pytest.raises(ServerError, match="speaking") as refused:
            await client.request({"type": "vad", "speaking": "yes"})
        assert refused.value.code == "bad_request" and refused.value.raw["code"] == "bad_request"
        with pytest.raises(ServerError) as refused:  # a well-formed request the server refuses
            await client.request(Unsubscribe(subscription_id="sub_x"))
        assert refused.value.code == "subscription.not_found"
