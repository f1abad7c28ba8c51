"""Log context and JSON log lines (roomscribe/common/logs.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys

import pytest

from roomscribe.common.logs import ContextFilter, JsonFormatter, log_context

pytestmark = pytest.mark.timeout(30)


def test_json_log_lines_carry_the_context() -> None:
    formatter, context = JsonFormatter(), ContextFilter()

    def line(**extra: object) -> dict[str, object]:
        record = logging.LogRecord("control.session", logging.INFO, __file__, 1, "hello %s", ("there",), None)
        for key, item in extra.items():
            setattr(record, key, item)
        context.filter(record)
        return json.loads(formatter.format(record))

    async def in_a_session() -> dict[str, object]:
        log_context(user="alice", session="s_1")
        return line(stats={"finals": 2})

    entry = asyncio.run(in_a_session())
    assert entry["message"] == "hello there" and entry["level"] == "INFO" and entry["logger"] == "control.session"
    assert (entry["session"], entry["user"], entry["stats"]) == ("s_1", "alice", {"finals": 2})
    assert "session" not in line() and "user" not in line()  # outside that context, nothing is known


def test_the_cli_writes_one_json_object_per_line() -> None:
    """`ROOMSCRIBE_LOG_FORMAT=json`: what the CLI's logging setup writes (a task inherits the context)."""
    program = """
import asyncio, logging
from roomscribe.cli import _setup_logging
from roomscribe.common.logs import log_context
_setup_logging(verbose=False)
async def main():
    log_context(user="bob")
    async def child():
        log_context(session="s_2")
        logging.getLogger("control.session").info("session %s ended", "s_2", extra={"stats": {"finals": 1}})
    await asyncio.create_task(child())
    logging.getLogger("control.app").info("socket closed")
asyncio.run(main())
"""
    env = {**os.environ, "ROOMSCRIBE_LOG_FORMAT": "json"}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=20, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["message"], e.get("session"), e["user"]) for e in lines] == [
        ("session s_2 ended", "s_2", "bob"),
        ("socket closed", None, "bob"),  # the child task's session stayed in the child
    ]
    assert lines[0]["stats"] == {"finals": 1}
