"""Which sessions use which LiveKit room, so that a room is deleted only when its last session ends.

Several multi-user sessions may share a room; the first to end must not delete it under the others.
A session that joins a room whose deletion is under way waits for the deletion to finish first, so
the deletion never removes the room from under the newcomer. One server's sessions only (the
deletion itself may look at the room once more: see LiveKitTransport.delete_room).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class RoomUsers:
    """Room → the ids of the live sessions in it; the last one to leave runs the deletion."""

    def __init__(self) -> None:
        self._users: dict[str, set[str]] = {}
        self._deleting: dict[str, asyncio.Future[None]] = {}

    def users(self, room: str) -> frozenset[str]:
        """The sessions using `room` now."""
        return frozenset(self._users.get(room, ()))

    async def acquire(self, room: str, session_id: str) -> None:
        """`session_id` uses `room` from now on; returns once no deletion of the room is under way."""
        self._users.setdefault(room, set()).add(session_id)
        deleting = self._deleting.get(room)
        if deleting is not None:
            await asyncio.wait([deleting])

    async def release(self, room: str, session_id: str, delete: Callable[[], Awaitable[None]]) -> bool:
        """`session_id` left `room`; runs `delete()` when it was the last (then True)."""
        users = self._users.get(room)
        if users is None or session_id not in users:
            return False
        users.discard(session_id)
        if users:
            return False
        del self._users[room]
        deletion = asyncio.ensure_future(delete())
        self._deleting[room] = deletion
        deletion.add_done_callback(lambda _: self._deleted(room, deletion))
        await asyncio.shield(deletion)  # a cancelled caller does not stop the deletion halfway
        return True

    def _deleted(self, room: str, deletion: asyncio.Future[None]) -> None:
        if self._deleting.get(room) is deletion:
            del self._deleting[room]
