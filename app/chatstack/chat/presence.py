"""Who is in a room, shared by every daphne process through Redis.

Each connection owns one member "<username>\\x00<channel name>" of a per-room
sorted set, scored by the time it was last seen. Connections refresh their
score every heartbeat; members not seen for three heartbeats belong to a
process that died without cleaning up and are pruned, so ghosts disappear.
"""

import asyncio
import time
import weakref
from dataclasses import dataclass

import redis.asyncio as redis
from django.conf import settings

from chatstack.redis_hosts import client, host_entry

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.Redis]] = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> redis.Redis:
    # redis.asyncio connections belong to the event loop that opened them.
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    url = settings.CHATSTACK_PRESENCE_REDIS_URL
    if url not in per_loop:
        # Presence commands never block, so a short read timeout only catches a dead server.
        per_loop[url] = client(
            host_entry(
                url,
                settings.REDIS_SENTINELS,
                decode_responses=True,
                socket_timeout=5,
                **settings.CHATSTACK_REDIS_OPTIONS,
            )
        )
    return per_loop[url]


@dataclass(frozen=True)
class Snapshot:
    users: list[str]
    # Increases with every update of the room, so receivers can drop snapshots
    # that the channel layer delivers out of order.
    version: int
    pruned: int


class RoomPresence:
    def __init__(self, room: str, username: str, channel_name: str) -> None:
        self.key = f"chatstack:presence:{room}"
        self.version_key = f"{self.key}:version"
        self.member = f"{username}\x00{channel_name}"

    @staticmethod
    def stale_after() -> float:
        return 3 * settings.CHATSTACK_HEARTBEAT_SECONDS

    async def touch(self) -> Snapshot:
        """Add this connection, or mark it as still alive."""
        return await self._update(present=True)

    async def leave(self) -> Snapshot:
        return await self._update(present=False)

    async def _update(self, present: bool) -> Snapshot:
        now = time.time()
        stale_after = self.stale_after()
        # Safe to retry (settings.CHATSTACK_REDIS_OPTIONS): ZADD and ZREM repeat to the
        # same set, and a version counted twice still only grows.
        async with redis_client().pipeline(transaction=True) as pipe:
            if present:
                pipe.zadd(self.key, {self.member: now})
            else:
                pipe.zrem(self.key, self.member)
            pipe.zremrangebyscore(self.key, "-inf", now - stale_after)
            pipe.zrange(self.key, 0, -1)
            pipe.incr(self.version_key)
            # An abandoned room disappears from Redis on its own.
            pipe.expire(self.key, int(stale_after) + 1)
            pipe.expire(self.version_key, int(stale_after) + 1)
            _, pruned, members, version, _, _ = await pipe.execute()
        users = sorted({member.split("\x00", 1)[0] for member in members})
        return Snapshot(users=users, version=version, pruned=pruned)
