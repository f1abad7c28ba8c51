"""Prints events as they arrive: interims on one rewritten line (on a terminal), the rest on their own."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from control.schema import tag_of
from roomscribe.client.events import TYPE_FIELD, Error, Event, FinalTranscript, InterimTranscript
from roomscribe.client.stream import format_event


class EventPrinter:
    """A callback for `ControlClient.on` (takes typed events or raw dicts)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.finals = 0
        self.errors = 0

    def __call__(self, event: Event | dict[str, Any]) -> None:
        raw = event.raw if isinstance(event, Event) else event
        kind = raw.get(TYPE_FIELD)
        self.finals += kind == tag_of(FinalTranscript)
        self.errors += kind == tag_of(Error)
        line = format_event(raw)
        if line is None:
            return
        interim = kind == tag_of(InterimTranscript)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("" if interim else "\n"))
        elif not interim:
            self.stream.write(line + "\n")
        self.stream.flush()
