"""Log context and the JSON log format (`ROOMSCRIBE_LOG_FORMAT=json`).

`log_context(session=..., user=...)` sets who a piece of work is for in context variables; every
log record made in that context (and in tasks created from it, which copy it) carries them as
`session` and `user`. With the JSON format each record is one JSON object per line: `time`, `level`,
`logger`, `message`, `session` and `user` when known, `stats` when the record has them (a socket's or
session's statistics when it ends), `exc` for an exception.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

LOG_FORMATS = ("text", "json")
_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("roomscribe_session", default=None)
_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("roomscribe_user", default=None)


def log_context(*, session: str | None = None, user: str | None = None) -> None:
    """Name the session and/or user of the current context (None leaves a value as it is)."""
    if session is not None:
        _session.set(session)
    if user is not None:
        _user.set(user)


class ContextFilter(logging.Filter):
    """Adds `session` and `user` from the context to every record (None when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session", None) is None:
            record.session = _session.get()
        if getattr(record, "user", None) is None:
            record.user = _user.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session", "user", "stats"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: int, log_format: str = "text") -> None:
    """The root logger: text (`time level logger: message`) or JSON lines, with the log context."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"ROOMSCRIBE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}; got {log_format!r}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
