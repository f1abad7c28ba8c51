"""Monitor subscriptions across control replicas.

The replica that holds a session publishes each event its monitors may want on the user's watch
channel in Redis (`Watched`, in order); every replica with a subscription to that user or to one of
their sessions listens on the channel and delivers the event to its own subscribers. So a monitor
sees a session wherever the session's socket is, and goes on seeing it when the session moves to
another replica. Pub/sub delivers only live events, like a subscription in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from functools import partial

import msgspec
from redis.asyncio.client import PubSub

from control.cluster_store import ClusterStore, until_redis_answers
from control.schema import Forwardable, SessionEnded, Watched, decode_cluster, decode_server_message
from control.subscriptions import Subscription

log = logging.getLogger(__name__)


class WatchRelay:
    """Listens on the watch channels of the users this replica's subscriptions need, and delivers."""

    def __init__(
        self,
        store: ClusterStore,
        subscriptions: Callable[[], Iterable[Subscription]],
        drop: Callable[[Subscription], None],
    ) -> None:
        """`subscriptions`: this replica's current ones; `drop`: forget one whose session ended."""
        self.store = store
        self._subscriptions = subscriptions
        self._drop = drop
        self._pubsub: PubSub = store.redis.pubsub()
        self._channels: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def follow(self, user: str) -> None:
        """Listen for `user`'s session events from now on (before the `subscribed` answer goes out)."""
        channel = self.store.watch_channel(user)
        if channel in self._channels:
            return
        await self._pubsub.subscribe(channel)
        self._channels.add(channel)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._pubsub.aclose()

    async def _listen(self) -> None:
        read = partial(self._pubsub.get_message, ignore_subscribe_messages=True, timeout=1.0)
        while True:  # redis-py subscribes again when it reconnects
            message = await until_redis_answers(read, "watch channels: reading")
            if message is not None and message.get("type") == "message":
                self._deliver(message["data"])

    def _deliver(self, data: bytes) -> None:
        try:
            watched = decode_cluster(data)
            if not isinstance(watched, Watched):
                return
            event = decode_server_message(msgspec.json.decode(watched.message))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("watch channels: a message this replica cannot read was skipped: %s", exc)
            return
        if not isinstance(event, Forwardable):
            return
        for subscription in list(self._subscriptions()):
            if subscription.session_id not in (None, watched.session_id) or (
                subscription.session_id is None and subscription.user != watched.user
            ):
                continue
            subscription.deliver(watched.session_id, watched.user, event)
            if isinstance(event, SessionEnded) and subscription.session_id == watched.session_id:
                self._drop(subscription)  # a subscription to one session ends with it
