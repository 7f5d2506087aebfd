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
