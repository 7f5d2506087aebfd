"""Every stored message reaches every connection in its room exactly once, in
order, even when the channel layer loses or reorders messages."""

import asyncio
import fcntl
import json
import os
import threading

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chatstack.chat import history, latest
from chatstack.chat.models import Message
from chatstack.chat.rooms import group_name

from .wsutil import joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def lost_post(room: str, author, text: str) -> int:
    """A message stored as a post stores it, whose broadcast the layer lost."""
    message, _, _ = await history.save_message(room, author, text)
    await latest.record(room, message.id)
    return message.id


async def messages(communicator, count: int) -> list[str]:
    return [(await receive(communicator, "message"))["message"] for _ in range(count)]


async def subscribed_again(client, channels: set, seconds: float = 5) -> None:
    """Waits until Redis has subscribers for every one of `channels` again."""
    for _ in range(int(seconds / 0.05)):
        if channels <= set(client.pubsub_channels()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the channel layer did not subscribe again within {seconds}s")


async def test_a_lost_message_is_filled_in_before_the_next(ws, alice, bob):
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    await lost_post("general", bob, "lost by the layer")
    await alice_chat.send_json_to({"message": "next"})

    assert await messages(bob_chat, 2) == ["lost by the layer", "next"]
    assert await messages(alice_chat, 2) == ["lost by the layer", "next"]
    assert await bob_chat.receive_nothing(timeout=0.2)


async def test_a_stored_message_is_returned_as_stored_with_the_rooms_message_before_it(alice, bob):
    """What every member's gap filling relies on: a wrong "message before" makes
    members fetch from the database for nothing, or miss a message the layer lost;
    the frame sent to the room is the stored message's, its time included."""
    first, before_first, new = await history.save_message("general", alice, "first", "c-1")
    _, before_other, _ = await history.save_message("elsewhere", bob, "other")
    second, before_second, _ = await history.save_message("general", bob, "second")
    again, before_again, again_new = await history.save_message("general", alice, "first", "c-1")

    assert (before_first, new, before_other) == (None, True, None)
    assert before_second == first.id
    assert (again.id, before_again, again_new) == (first.id, None, False)
    stored = await Message.objects.select_related("author").aget(id=second.id)
    assert second.as_frame() == stored.as_frame()


async def test_reordered_messages_arrive_once_in_order(ws, alice, bob):
    chat = await ws(user=alice, room="general")
    await joined(chat)
    first, previous, _ = await history.save_message("general", bob, "first")
    second, _, _ = await history.save_message("general", bob, "second")
    layer = get_channel_layer()

    for message, before in ((second, first.id), (first, previous)):
        frame = json.dumps(message.as_frame())
        event = {"type": "chat.message", "id": message.id, "previous": before, "frame": frame}
        await layer.group_send(group_name("general"), event)

    assert await messages(chat, 2) == ["first", "second"]
    assert await chat.receive_nothing(timeout=0.2)


async def test_heartbeat_delivers_a_lost_last_message(ws, alice, bob, settings):
    settings.CHATSTACK_HEARTBEAT_SECONDS = 0.2
    chat = await ws(user=alice, room="general")
    await joined(chat)

    await lost_post("general", bob, "nothing comes after me")

    assert await messages(chat, 1) == ["nothing comes after me"]
    assert await chat.receive_nothing(timeout=0.5)


async def test_history_counts_as_delivered(ws, alice, bob, settings):
    settings.CHATSTACK_HISTORY_SIZE = 0
    await lost_post("general", bob, "before alice came")
    settings.CHATSTACK_HEARTBEAT_SECONDS = 0.2
    chat = await ws(user=alice, room="general")
    assert await joined(chat) == []

    await chat.send_json_to({"message": "hello"})

    assert await messages(chat, 1) == ["hello"]
    assert await chat.receive_nothing(timeout=0.5)


async def test_broadcasts_do_not_wait_for_the_database_thread(ws, alice, bob):
    """channels runs close_old_connections in the database thread before every
    event by default: a room's deliveries would queue behind its writes."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    stored, previous, _ = await history.save_message("general", alice, "while busy")
    release = threading.Event()
    busy = asyncio.ensure_future(database_sync_to_async(release.wait)(10))
    try:
        await get_channel_layer().group_send(
            group_name("general"),
            {
                "type": "chat.message",
                "id": stored.id,
                "previous": previous,
                "frame": '{"type": "message", "message": "while busy"}',
            },
        )
        assert await messages(bob_chat, 1) == ["while busy"]
    finally:
        release.set()
        await busy


async def test_sqlite_writes_wait_for_the_writer_lock(alice, settings):
    lock = os.open(settings.CHATSTACK_SQLITE_WRITER_LOCK, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        save = asyncio.ensure_future(history.save_message("general", alice, "queued"))
        await asyncio.sleep(0.3)
        assert not save.done()
    finally:
        os.close(lock)
    message, previous, _ = await asyncio.wait_for(save, 5)
    assert (message.text, previous) == ("queued", None)


async def test_messages_published_while_the_layer_reconnects_are_not_lost(
    ws, alice, bob, redis_client
):
    """django/channels_redis#256: the PubSub layer does not hear what is published
    while its subscription reconnects. redis-py's retry (CHATSTACK_REDIS_OPTIONS)
    reconnects it at once, so whether "while deaf" is lost (and filled in from the
    database before "after") depends on timing; either way everyone sees both once."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    subscribed = set(redis_client.pubsub_channels())
    assert redis_client.client_kill_filter(_type="pubsub") >= 1
    await alice_chat.send_json_to({"message": "while deaf"})
    # "after" reveals a loss only if the layer hears it: once it subscribed again.
    await subscribed_again(redis_client, subscribed)
    await alice_chat.send_json_to({"message": "after"})

    assert await messages(bob_chat, 2) == ["while deaf", "after"]
    assert await messages(alice_chat, 2) == ["while deaf", "after"]


async def test_messages_of_the_previous_release_are_delivered(ws, alice):
    """During a rolling deploy, processes of the old release send bare frames."""
    chat = await ws(user=alice, room="general")
    await joined(chat)
    frame = json.dumps({"type": "message", "id": 1, "user": "old", "message": "from v1"})
    await get_channel_layer().group_send(
        group_name("general"), {"type": "chat.message", "frame": frame}
    )

    assert await messages(chat, 1) == ["from v1"]


async def test_a_redis_restart_fails_no_handshake_or_post(ws, alice, bob, redis_client):
    """After Redis dropped every connection (a restart, an outage), the next person to
    open the room must get in and have their message delivered, not be refused
    (an HTTP 500 on the handshake) or see the post fail."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)

    # Every pooled connection of the app: presence, limits and the channel layer.
    assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await bob_chat.send_json_to({"message": "after the restart"})

    assert await messages(bob_chat, 1) == ["after the restart"]
    assert await messages(alice_chat, 1) == ["after the restart"]
