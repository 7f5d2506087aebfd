"""Scrollback: `history before` pages through a room's older messages, from the index."""

import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from chatstack.chat import consumers, history, limits
from chatstack.chat.models import Message

from .wsutil import joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def fill(room: str, author, count: int) -> list[int]:
    """The ids of `count` new messages "<room> 0", "<room> 1", ... in the room, oldest first."""
    await Message.objects.abulk_create(
        [Message(room=room, author=author, text=f"{room} {i}") for i in range(count)]
    )
    return [
        i
        async for i in Message.objects.filter(room=room).order_by("id").values_list("id", flat=True)
    ]


async def page(chat, before: int, limit: int | None = None) -> dict:
    request = {"type": "history", "before": before}
    if limit is not None:
        request["limit"] = limit
    await chat.send_json_to(request)
    return await receive(chat, "history")


async def test_pages_reach_back_to_the_first_message_each_once_in_order(ws, alice, bob):
    """Scrolling up shows every older message once, oldest first, and then stops."""
    ids = await fill("general", alice, 7)
    await fill("other", alice, 3)
    chat = await ws(user=bob, room="general")
    await joined(chat)

    seen, before, pages = [], ids[-1] + 1, []
    while True:
        frame = await page(chat, before, limit=3)
        pages.append((len(frame["messages"]), frame["complete"]))
        seen = frame["messages"] + seen
        if frame["complete"]:
            break
        before = frame["messages"][0]["id"]

    assert pages == [(3, False), (3, False), (1, True)]
    assert [m["id"] for m in seen] == ids
    assert [m["message"] for m in seen] == [f"general {i}" for i in range(7)]
    assert seen[0]["user"] == "alice" and seen[0]["type"] == "message"


async def test_a_page_that_ends_exactly_at_the_first_message_is_complete(ws, alice):
    """No pointless extra request (and no spinner that never goes away) at the top."""
    ids = await fill("general", alice, 4)
    chat = await ws(user=alice, room="general")
    await joined(chat)

    frame = await page(chat, ids[-1], limit=3)
    assert ([m["id"] for m in frame["messages"]], frame["complete"]) == (ids[:3], True)
    assert await page(chat, ids[0]) == {
        "type": "history",
        "messages": [],
        "complete": True,
        "before": ids[0],
    }


async def test_the_page_size_defaults_to_50_and_is_at_most_100(ws, alice):
    ids = await fill("general", alice, 120)
    chat = await ws(user=alice, room="general")
    await joined(chat)

    assert [m["id"] for m in (await page(chat, ids[-1] + 1))["messages"]] == ids[-50:]
    frame = await page(chat, ids[-1] + 1, limit=100)
    assert ([m["id"] for m in frame["messages"]], frame["complete"]) == (ids[-100:], False)


@pytest.mark.parametrize(
    "request_frame",
    [
        {"type": "history"},
        {"type": "history", "before": "12"},
        {"type": "history", "before": True},
        {"type": "history", "before": 0},
        {"type": "history", "before": 2**63},
        {"type": "history", "before": 5, "limit": 0},
        {"type": "history", "before": 5, "limit": 101},
        {"type": "history", "before": 5, "limit": 1.5},
        {"type": "history", "before": 5, "limit": None},
    ],
)
async def test_a_bad_history_request_gets_an_error_frame(ws, alice, request_frame):
    chat = await ws(user=alice)
    await joined(chat)
    await chat.send_json_to(request_frame)
    assert await receive(chat, "error") == {
        "type": "error",
        "error": 'Expected {"type": "history", "before": <message id>, "limit": <1 to 100>}.',
        "reason": "invalid_frame",
    }


async def test_scrolling_back_does_not_spend_the_message_budget(ws, alice, settings):
    """Someone who read back through a long room can still post right away."""
    settings.CHATSTACK_RATE_LIMIT_COUNT = 1
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    chat = await ws(user=alice)
    await joined(chat)
    for _ in range(3):
        await page(chat, 1000)
    await chat.send_json_to({"message": "still allowed"})
    assert (await receive(chat, "message"))["message"] == "still allowed"


async def test_a_script_reading_whole_rooms_in_a_loop_is_held_back(ws, alice, monkeypatch):
    monkeypatch.setattr(limits, "HISTORY_PAGES_COUNT", 2)
    chat = await ws(user=alice)
    await joined(chat)
    for _ in range(2):
        await page(chat, 1000)
    await chat.send_json_to({"type": "history", "before": 1000, "limit": 100})
    assert await receive(chat, "error") == {
        "type": "error",
        "error": "Slow down: older messages are loaded at most 2 times per 10 seconds.",
        "reason": "history_limited",
        "before": 1000,
    }


async def test_older_messages_that_cannot_be_read_are_refused_not_hung(ws, alice, monkeypatch):
    """The page stops its spinner and may ask again, instead of waiting forever."""

    async def broken(*args):
        raise RuntimeError("database is down")

    chat = await ws(user=alice)
    await joined(chat)
    monkeypatch.setattr(consumers, "load_older", broken)
    await chat.send_json_to({"type": "history", "before": 1000})
    assert await receive(chat, "error") == {
        "type": "error",
        "error": "Older messages could not be loaded, try again.",
        "reason": "history_failed",
        "before": 1000,
    }


ROOM_SIZE = 10_000


@pytest.fixture
async def big_room(alice):
    """A room of 10,000 messages among the messages of other rooms."""
    await fill("quiet", alice, 200)
    ids = await fill("busy", alice, ROOM_SIZE)
    await fill("later", alice, 200)
    return ids


async def test_a_10000_message_room_is_paged_through_over_a_websocket(ws, alice, big_room):
    chat = await ws(user=alice, room="busy")
    await joined(chat)
    started = time.perf_counter()
    newest = await page(chat, big_room[-1] + 1, limit=100)
    oldest = await page(chat, big_room[100], limit=100)
    print(f"two pages of a {ROOM_SIZE}-message room: {time.perf_counter() - started:.3f}s")

    assert ([m["id"] for m in newest["messages"]], newest["complete"]) == (big_room[-100:], False)
    assert ([m["id"] for m in oldest["messages"]], oldest["complete"]) == (big_room[:100], True)


def test_a_page_is_one_query_on_the_room_index(django_assert_num_queries, big_room):
    """A page reads its rows from the (room, id) index: no scan of the table, no
    sort of the room, however long the room is (a scan would slow every scroll
    of every reader as the room grows)."""
    with django_assert_num_queries(1) as captured:
        messages, complete = async_to_sync(history.load_older)("busy", big_room[5000], 100)
    assert ([m["id"] for m in messages], complete) == (big_room[4900:5000], False)

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + captured.captured_queries[0]["sql"])
        plan = " / ".join(row[-1] for row in cursor.fetchall())
    print(f"query plan: {plan}")
    assert "chat_message_room_id" in plan, plan
    assert "SCAN chat_chat_message" not in plan and "SCAN chat_message" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
