import json
from urllib.parse import quote

import pytest
from channels.layers import get_channel_layer

from chatstack.chat import consumers
from chatstack.chat.models import Message

from .wsutil import joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_anonymous_handshake_is_refused(ws):
    await ws(user=None, expect=False)


@pytest.mark.parametrize("origin", ["http://evil.example", None])
async def test_foreign_or_missing_origin_is_refused(ws, alice, origin):
    await ws(user=alice, origin=origin, expect=False)


@pytest.mark.parametrize("room", ["has%20space", "semi%3Bcolon", "x" * 65, "dot.dot"])
async def test_invalid_room_name_is_refused(ws, alice, room):
    await ws(user=alice, room=room, expect=False)


async def test_unicode_room_name_is_accepted(ws, alice):
    room = "café_日本-1"
    chat = await ws(user=alice, room=quote(room))
    await joined(chat)
    await chat.send_json_to({"message": "bonjour"})
    assert (await receive(chat, "message"))["message"] == "bonjour"
    assert await Message.objects.filter(room=room).acount() == 1


async def test_message_is_stored_then_broadcast_to_everyone_in_the_room(ws, alice, bob):
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    elsewhere = await ws(user=bob, room="other")
    await joined(elsewhere)

    await alice_chat.send_json_to({"message": "hello bob"})

    received = await receive(bob_chat, "message")
    stored = await Message.objects.aget()
    assert received == {
        "type": "message",
        "id": stored.id,
        "user": "alice",
        "message": "hello bob",
        "ts": stored.created.isoformat().replace("+00:00", "Z"),
    }
    # The sender's own copy is its acknowledgement.
    assert await receive(alice_chat, "message") == received
    assert await elsewhere.receive_nothing(timeout=0.2)


async def test_late_joiner_gets_the_newest_history_oldest_first(ws, alice, bob, settings):
    settings.CHATSTACK_HISTORY_SIZE = 3
    await Message.objects.abulk_create(
        [Message(room="general", author=alice, text=f"m{i}") for i in range(5)]
    )
    await Message.objects.acreate(room="other", author=alice, text="not here")

    chat = await ws(user=bob, room="general")
    history = await joined(chat)

    assert [m["message"] for m in history] == ["m2", "m3", "m4"]
    assert all(m["user"] == "alice" and m["type"] == "message" for m in history)
    assert [m["id"] for m in history] == sorted(m["id"] for m in history)


async def test_presence_follows_joins_and_leaves(ws, alice, bob):
    alice_chat = await ws(user=alice, room="general")
    await alice_chat.receive_json_from()  # history
    assert await receive(alice_chat, "presence") == {"type": "presence", "users": ["alice"]}

    bob_chat = await ws(user=bob, room="general")
    await bob_chat.receive_json_from()
    assert (await receive(bob_chat, "presence"))["users"] == ["alice", "bob"]
    assert (await receive(alice_chat, "presence"))["users"] == ["alice", "bob"]

    # A second tab of the same user is not a second person.
    bob_tab = await ws(user=bob, room="general")
    assert (await receive(bob_tab, "presence"))["users"] == ["alice", "bob"]
    assert (await receive(alice_chat, "presence"))["users"] == ["alice", "bob"]
    await bob_tab.disconnect()
    assert (await receive(alice_chat, "presence"))["users"] == ["alice", "bob"]

    await bob_chat.disconnect()
    assert (await receive(alice_chat, "presence"))["users"] == ["alice"]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "Expected a JSON object"),
        ('"just a string"', "Expected a JSON object"),
        ("{}", "Expected a JSON object"),
        ('{"message": 42}', "Expected a JSON object"),
        ('{"message": null}', "Expected a JSON object"),
        ('{"message": ""}', "empty"),
        ('{"message": " \\n\\t "}', "empty"),
        (json.dumps({"message": "x" * 2001}), "too long"),
        ("x" * 100_000, "too long"),
        ('{"message": "nul\\u0000byte"}', "NUL"),
    ],
)
async def test_bad_input_gets_an_error_and_reaches_nobody(ws, alice, bob, frame, error):
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await receive(alice_chat, "presence")

    await alice_chat.send_to(text_data=frame)

    reply = await alice_chat.receive_json_from()
    assert reply["type"] == "error"
    assert error in reply["error"]
    assert await bob_chat.receive_nothing(timeout=0.2)
    assert await Message.objects.acount() == 0
    # The connection survives and still works.
    await alice_chat.send_json_to({"message": "still here"})
    assert (await receive(bob_chat, "message"))["message"] == "still here"


async def test_message_at_the_length_limit_is_accepted(ws, alice):
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_json_to({"message": "é" * 2000})
    assert (await receive(chat, "message"))["message"] == "é" * 2000


async def test_burst_above_the_rate_limit_is_refused(ws, alice, settings):
    settings.CHATSTACK_RATE_LIMIT_COUNT = 3
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    chat = await ws(user=alice)
    await joined(chat)

    for i in range(5):
        await chat.send_json_to({"message": f"m{i}"})
    frames = [await chat.receive_json_from() for _ in range(5)]

    assert [f["type"] for f in frames].count("message") == 3
    errors = [f for f in frames if f["type"] == "error"]
    assert len(errors) == 2
    assert "Slow down" in errors[0]["error"]
    assert await Message.objects.acount() == 3


async def test_binary_frame_gets_an_error_and_the_connection_survives(ws, alice):
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_to(bytes_data=b'{"message": "binary"}')
    reply = await chat.receive_json_from()
    assert reply == {
        "type": "error",
        "error": "Binary frames are not supported; send JSON text.",
        "reason": "binary_frame",
    }
    await chat.send_json_to({"message": "text works"})
    assert (await receive(chat, "message"))["message"] == "text works"


async def test_html_is_relayed_verbatim_as_text(ws, alice, bob):
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">&amp;'
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    await alice_chat.send_json_to({"message": payload})

    assert (await receive(bob_chat, "message"))["message"] == payload
    late = await ws(user=bob, room="general")
    assert [m["message"] for m in await joined(late)] == [payload]


async def test_failed_save_tells_the_sender_and_nobody_else(ws, alice, bob, monkeypatch):
    async def broken_save(*args):
        raise RuntimeError("database is down")

    monkeypatch.setattr(consumers, "save_message", broken_save)
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await receive(alice_chat, "presence")

    await alice_chat.send_json_to({"message": "lost?"})

    assert await alice_chat.receive_json_from() == {
        "type": "error",
        "error": "Message not sent, try again.",
        "reason": "not_sent",
    }
    assert await bob_chat.receive_nothing(timeout=0.2)


async def test_failed_broadcast_tells_the_sender(ws, alice, monkeypatch):
    chat = await ws(user=alice)
    await joined(chat)

    async def broken_group_send(*args):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(get_channel_layer(), "group_send", broken_group_send)
    await chat.send_json_to({"message": "hello"})

    assert (await chat.receive_json_from())["error"] == "Message not sent, try again."


async def test_idle_connection_outlives_the_blocking_receive(ws, alice, bob):
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    # Longer than channels_redis' 5 s BZPOPMIN, which redis-py 8 used to time out.
    assert await alice_chat.receive_nothing(timeout=6, interval=0.5)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await bob_chat.send_json_to({"message": "still listening?"})
    assert (await receive(alice_chat, "message"))["message"] == "still listening?"
