"""Monitor subscriptions: another socket receives a session's events (never its audio or tokens).

A subscription names one session (`session_id`) or a user (`user`: every session that user has
now or starts later). It is allowed for the same user, or with the control token's `monitor` claim.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from control.session import Outbox

#: Event types a subscriber may ask for; `token` (LiveKit credentials) is never forwarded.
SUBSCRIBABLE = frozenset(
    {
        "speech.start",
        "speech.end",
        "transcript.interim",
        "transcript.final",
        "publish.start",
        "publish.stop",
        "status",
        "session.ended",
    }
)


@dataclass(eq=False)
class Subscription:
    outbox: Outbox
    events: frozenset[str]
    session_id: str | None = None
    user: str | None = None
    id: str = field(default_factory=lambda: "sub_" + secrets.token_urlsafe(8))

    def deliver(self, session_id: str, user: str, message: dict[str, Any]) -> None:
        """Forward one session message if this subscription wants its type."""
        if message.get("type") not in self.events:
            return
        self.outbox.send_json(
            {**message, "subscription_id": self.id, "session_id": session_id, "user": user},
            droppable=message.get("type") == "transcript.interim",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "subscription_id": self.id,
            "session_id": self.session_id,
            "user": self.user,
            "events": sorted(self.events),
        }
