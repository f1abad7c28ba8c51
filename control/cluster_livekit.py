"""A control replica's part of a cluster's LiveKit session: the client's credentials and its requests.

The worker running the session joins the room itself (agent/worker_livekit.py): its agent, publish
gating, `listening` status, transcripts into the room and the room's deletion are there, and the
room's media never pass through the control tier. What needs the socket or the client's token stays
here: the publish-only token of session.ready (minted once the worker accepted, i.e. its agent is in
the room), `token.refresh`, the token push before expiry, and the `vad` and ready signals, which go
to the worker down the session's input stream (`VadIn`, `ReadyIn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.events import PipelineEvent
from control.livekit_media import LiveKitSessionMedia, LiveKitTransport
from control.schema import ReadyIn, VadIn

if TYPE_CHECKING:
    from control.cluster_session import ClusterSession
    from control.session import Session


class RemoteLiveKitMedia(LiveKitSessionMedia):
    """LiveKitSessionMedia without the agent: credentials here, everything in the room on the worker."""

    session: ClusterSession

    async def join(self) -> None:
        """Nothing to join here: the worker's agent is in the room once it accepted the session."""

    async def ready(self) -> None:
        self.session.send_input(ReadyIn())

    async def on_client_vad(self, speaking: bool) -> None:
        self.session.send_input(VadIn(speaking=speaking))

    def observe(self, event: PipelineEvent) -> None:
        """Gating and transcripts into the room are the worker's (its pipelines are there)."""

    async def close(self) -> None:
        """Stop the token push; the worker's agent leaves and deletes the room when it gets `end`."""
        await self.leave()


class ClusterLiveKitTransport(LiveKitTransport):
    """The LiveKit transport of a control replica: its sessions' media are on their workers."""

    def session_media(self, session: Session) -> RemoteLiveKitMedia:
        return RemoteLiveKitMedia(self, session)
