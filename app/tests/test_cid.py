"""Client message ids: every message is stored once however often the client retries it."""

import pytest
from channels.layers import get_channel_layer
from django.db import IntegrityError

from chatstack.chat.models import Message

from .wsutil import drain, joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_everyone_gets_the_cid_with_the_message(ws, alice, bob):
    """The sender recognises its own message (and clears its input) by the cid."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    await alice_chat.send_json_to({"message": "hello", "cid": "c-1"})

    seen = await receive(bob_chat, "message")
    assert (seen["message"], seen["cid"]) == ("hello", "c-1")
    assert await receive(alice_chat, "message") == seen
    assert (await Message.objects.aget()).cid == "c-1"


async def test_a_repeated_cid_stores_nothing_and_answers_with_the_original(ws, alice, bob):
    """A retry of a message that did arrive must not show it twice in the room."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await alice_chat.send_json_to({"message": "once", "cid": "c-1"})
    original = await receive(alice_chat, "message")
    await receive(bob_chat, "message")

    await alice_chat.send_json_to({"message": "once", "cid": "c-1"})

    assert await receive(alice_chat, "message") == original
    assert await Message.objects.acount() == 1
    assert [f for f in await drain(bob_chat) if f["type"] == "message"] == [], (
        "the others were sent the retried message again"
    )


async def test_a_retry_after_a_failed_broadcast_is_stored_once(ws, alice, bob, monkeypatch):
    """The row was written, then the broadcast failed ("Message not sent, try
    again."): the retry the user makes must show it once, to everyone."""
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await drain(alice_chat)
    layer = get_channel_layer()
    group_send = layer.group_send
    failed = []

    async def fails_once(group, event):
        if event["type"] == "chat.message" and not failed:
            failed.append(event)
            raise ConnectionError("redis went away")
        return await group_send(group, event)

    monkeypatch.setattr(layer, "group_send", fails_once)
    frame = {"message": "are you there?", "cid": "retry-1"}
    await alice_chat.send_json_to(frame)
    assert await receive(alice_chat, "error") == {
        "type": "error",
        "error": "Message not sent, try again.",
        "reason": "not_sent",
        "cid": "retry-1",
    }
    assert await Message.objects.acount() == 1, "the failure happened after the row was written"

    await alice_chat.send_json_to(frame)

    stored = await Message.objects.aget()
    for chat in (alice_chat, bob_chat):
        received = [f for f in await drain(chat) if f["type"] == "message"]
        assert [(f["id"], f["cid"]) for f in received] == [(stored.id, "retry-1")]


async def test_a_retry_from_a_new_connection_gets_the_original(ws, alice):
    """A page that lost its connection before the echo sends the message again
    after reconnecting: it must be told the message is there, not store it again."""
    first = await ws(user=alice, room="general")
    await joined(first)
    await first.send_json_to({"message": "sent just before the cut", "cid": "c-9"})
    original = await receive(first, "message")
    await first.disconnect()

    again = await ws(user=alice, room="general")
    assert [m["id"] for m in await joined(again)] == [original["id"]]
    await again.send_json_to({"message": "sent just before the cut", "cid": "c-9"})

    assert await receive(again, "message") == original
    assert await Message.objects.acount() == 1


async def test_the_same_cid_is_another_message_for_another_account_or_room(ws, alice, bob):
    """Two clients that happen to pick the same id must not lose each other's messages."""
    for user, room in ((alice, "general"), (bob, "general"), (alice, "other")):
        chat = await ws(user=user, room=room)
        await joined(chat)
        await chat.send_json_to({"message": f"{user.username} in {room}", "cid": "same"})
        assert (await receive(chat, "message"))["message"] == f"{user.username} in {room}"
    assert await Message.objects.filter(cid="same").acount() == 3


async def test_messages_without_cid_are_never_taken_for_retries(ws, alice):
    chat = await ws(user=alice)
    await joined(chat)
    for _ in range(2):
        await chat.send_json_to({"message": "again"})
        assert "cid" not in await receive(chat, "message"), "a frame without cid changed"
    assert await Message.objects.acount() == 2


async def test_the_database_refuses_a_second_row_with_the_same_cid(alice):
    """The guarantee holds for writers on other app hosts, not only for this lookup."""
    await Message.objects.acreate(room="general", author=alice, text="a", cid="c")
    with pytest.raises(IntegrityError):
        await Message.objects.acreate(room="general", author=alice, text="b", cid="c")


@pytest.mark.parametrize(
    ("frame", "error", "reason"),
    [
        ({"message": " ", "cid": "c-2"}, "Message is empty.", "empty"),
        (
            {"message": "x" * 2001, "cid": "c-2"},
            "Message is too long (at most 2000 characters).",
            "too_long",
        ),
        (
            {"text": "hi", "cid": "c-2"},
            'Expected a JSON object like {"message": "text"}.',
            "invalid_frame",
        ),
    ],
)
async def test_an_error_about_a_message_names_its_cid(ws, alice, frame, error, reason):
    """The page shows the reason next to the message it refused."""
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_json_to(frame)
    assert await receive(chat, "error") == {
        "type": "error",
        "error": error,
        "reason": reason,
        "cid": "c-2",
    }


async def test_a_rate_limited_message_names_its_cid(ws, alice, settings):
    settings.CHATSTACK_RATE_LIMIT_COUNT = 1
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_json_to({"message": "first", "cid": "c-1"})
    await receive(chat, "message")
    await chat.send_json_to({"message": "second", "cid": "c-2"})
    refused = await receive(chat, "error")
    assert (refused["cid"], refused["error"][:9]) == ("c-2", "Slow down")


@pytest.mark.parametrize("cid", ["", "x" * 65, 7, ["c"], "tab\there", "nul\x00"])
async def test_an_unusable_cid_is_refused(ws, alice, cid):
    """A cid that cannot be stored or echoed is refused rather than dropped silently."""
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_json_to({"message": "hello", "cid": cid})
    assert await receive(chat, "error") == {
        "type": "error",
        "error": '"cid" must be 1 to 64 printable characters.',
        "reason": "invalid_frame",
    }
    assert await Message.objects.acount() == 0
