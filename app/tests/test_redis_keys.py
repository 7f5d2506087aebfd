"""Every key the app writes to Redis has a bound or a TTL: names of new rooms, new
accounts or dead processes must not fill Redis, and `volatile-lru` can evict only
keys with a TTL."""

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import Client

from chatstack.chat import latest

from .conftest import session_cookie_of
from .wsutil import closed_by_server, joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


def core_layer() -> dict:
    hosts = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": hosts, "capacity": 1000, "group_expiry": 300},
        }
    }


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_every_key_left_after_a_chat_expires(ws, alice, bob, redis_client, settings, layer):
    if layer == "core":
        settings.CHANNEL_LAYERS = core_layer()
    settings.CHATSTACK_RATE_LIMIT_COUNT = 100
    browser = Client()
    await sync_to_async(browser.force_login)(alice)
    alice_chat = await ws(cookie=session_cookie_of(browser), room="general")
    await joined(alice_chat)
    for room in [f"room-{i}" for i in range(20)] + ["general"]:
        chat = await ws(user=bob, room=room)
        await joined(chat)
        await chat.send_json_to({"message": f"hello {room}"})
        await receive(chat, "message")
        await chat.disconnect()
    await sync_to_async(browser.post)("/accounts/logout/")
    await closed_by_server(alice_chat)

    keys = redis_client.keys("*")
    assert {key.decode() for key in keys} >= {
        latest.key("room-0"),
        f"chatstack:account:{bob.pk}:messages",
        f"chatstack:account:{alice.pk}:sockets",
    }
    without_ttl = [key for key in keys if redis_client.pttl(key) < 0]
    assert without_ttl == [], "keys that would stay in Redis forever"
