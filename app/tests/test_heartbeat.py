import asyncio
import time

import pytest

from chatstack.chat.presence import RoomPresence

from .wsutil import joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_heartbeat_prunes_ghosts_and_announces_it(ws, alice, redis_client, settings):
    settings.CHATSTACK_HEARTBEAT_SECONDS = 0.2
    chat = await ws(user=alice, room="general")
    await joined(chat)
    ghost = RoomPresence("general", "ghost", "dead-process!chan")
    redis_client.zadd(ghost.key, {ghost.member: time.time() - 60})

    assert (await receive(chat, "presence"))["users"] == ["alice"]
    assert redis_client.zscore(ghost.key, ghost.member) is None


async def test_a_cancelled_connection_leaves_no_heartbeat_behind(ws, alice):
    """Otherwise every socket Daphne gave up on (stuck on a dead Redis) keeps a task
    refreshing presence for good: the server slows down and logs errors forever."""

    def heartbeats() -> list[asyncio.Task]:
        return [
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == "ChatConsumer.keep_alive" and not task.done()
        ]

    chat = await ws(user=alice, room="general")
    await joined(chat)
    assert len(heartbeats()) == 1
    # As Daphne does to an application instance that outlives its socket.
    chat.future.cancel()
    await asyncio.wait([chat.future])
    await asyncio.sleep(0)
    assert heartbeats() == []
