"""Monitor subscriptions: another socket receives a session's events (never its audio or tokens).

A subscription names one session (`session_id`) or a user (`user`: every session that user has
now or starts later). It is allowed for the same user, or with the control token's `monitor` claim.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import msgspec

from control.schema import Forwardable, RequestId, Subscribed
from control.session import Outbox


@dataclass(eq=False)
class Subscription:
    outbox: Outbox
    events: frozenset[str]
    session_id: str | None = None
    user: str | None = None
    id: str = field(default_factory=lambda: "sub_" + secrets.token_urlsafe(8))

    def deliver(self, session_id: str, user: str, message: Forwardable) -> None:
        """Forward one session message if this subscription wants its type."""
        if message.type not in self.events:
            return
        forwarded = msgspec.structs.replace(message, subscription_id=self.id, session_id=session_id, user=user)
        self.outbox.send_message(forwarded, droppable=message.droppable)

    def reply(self, request_id: RequestId | None) -> Subscribed:
        """The `subscribed` answer to the request that made this subscription."""
        return Subscribed(
            id=request_id,
            subscription_id=self.id,
            session_id=self.session_id,
            user=self.user,
            events=sorted(self.events),
        )
