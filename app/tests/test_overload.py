"""Graceful overload: a host that cannot keep up says "busy" and cuts off members
that cannot keep up, instead of letting the whole room lag; nothing stored is lost."""

import asyncio
import time

import pytest

from chatstack.asgi import application
from chatstack.chat import consumers
from chatstack.chat.metrics import Rejection
from chatstack.chat.models import Message
from chatstack.chat.overload import BACKLOG, LOOP_LAG, Backpressure
from chatstack.chat.protocol import CLOSE_TOO_SLOW

from .metricsutil import value
from .wsutil import closed_by_server, drain, joined, receive, receive_where

pytestmark = pytest.mark.django_db(transaction=True)

BUSY = {"type": "error", "error": "The server is busy, try again in a moment.", "reason": "busy"}


def busy_count() -> float:
    return value("chatstack_messages_rejected_total", reason=Rejection.BUSY)


def too_slow_count() -> float:
    return value("chatstack_connections_too_slow_total")


@pytest.fixture
def held_store(monkeypatch):
    """Stores wait until `release` is set; `entered` is set once one is waiting."""
    entered, release = asyncio.Event(), asyncio.Event()
    save_message = consumers.save_message

    async def held(*args, **kwargs):
        entered.set()
        await release.wait()
        return await save_message(*args, **kwargs)

    monkeypatch.setattr(consumers, "save_message", held)
    return entered, release


async def test_a_full_backlog_refuses_at_once_and_accepts_again_when_drained(
    ws, alice, bob, settings, held_store
):
    """When the process cannot store posts as fast as they come, a sender is told
    "busy" with its message's cid (the page keeps the text to send again) instead
    of the room lagging; once the backlog drains the same post goes through."""
    settings.CHATSTACK_POST_BACKLOG = 1
    entered, release = held_store
    before = busy_count()
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    await alice_chat.send_json_to({"message": "first", "cid": "a-1"})
    await asyncio.wait_for(entered.wait(), 3)
    assert BACKLOG.size == 1
    await bob_chat.send_json_to({"message": "second", "cid": "b-1"})

    assert await receive(bob_chat, "error") == {**BUSY, "cid": "b-1"}
    assert busy_count() == before + 1, "a busy refusal missing from /metrics"
    assert not await Message.objects.filter(cid="b-1").aexists(), "a refused post was stored"

    release.set()
    assert (await receive(alice_chat, "message"))["cid"] == "a-1"
    assert BACKLOG.size == 0, "a stored post kept its place in the backlog"
    await bob_chat.send_json_to({"message": "second", "cid": "b-1"})
    # Before the fix this timed out: posts stayed refused after the load dropped.
    await receive_where(bob_chat, "message", cid="b-1")
    assert [m.cid async for m in Message.objects.order_by("id")] == ["a-1", "b-1"]


async def test_a_post_waiting_for_the_database_does_not_hold_up_what_its_sender_is_sent(
    ws, alice, bob, monkeypatch
):
    """While a member's own post waits for the database, the room's messages still
    reach them at once: a busy host let people who post often get the room
    seconds late, behind their own posts. Their posts stay in the order sent."""
    entered, release = asyncio.Event(), asyncio.Event()
    save_message = consumers.save_message

    async def first_held(room, author, text, *args, **kwargs):
        if text == "held":
            entered.set()
            await release.wait()
        return await save_message(room, author, text, *args, **kwargs)

    monkeypatch.setattr(consumers, "save_message", first_held)
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)

    await alice_chat.send_json_to({"message": "held", "cid": "a-1"})
    await alice_chat.send_json_to({"message": "after it", "cid": "a-2"})
    await asyncio.wait_for(entered.wait(), 3)
    await bob_chat.send_json_to({"message": "meanwhile", "cid": "b-1"})
    # Before the fix this timed out: alice's consumer waited for her post.
    await receive_where(alice_chat, "message", cid="b-1")

    release.set()
    assert (await receive(alice_chat, "message"))["cid"] == "a-1"
    assert (await receive(alice_chat, "message"))["cid"] == "a-2"
    assert [m.cid async for m in Message.objects.order_by("id")] == ["b-1", "a-1", "a-2"]


async def test_a_post_that_waited_too_long_for_the_database_is_refused_not_stored_late(
    ws, alice, settings
):
    """A message stored seconds late lands out of the conversation: the sender
    is told "busy" and sends it again instead."""
    settings.CHATSTACK_POST_MAX_WAIT_SECONDS = 0  # Any wait at all is too long.
    before = busy_count()
    chat = await ws(user=alice, room="general")
    await joined(chat)

    await chat.send_json_to({"message": "late", "cid": "late-1"})

    assert await receive(chat, "error") == {**BUSY, "cid": "late-1"}
    assert busy_count() == before + 1
    assert await Message.objects.acount() == 0, "a post refused as busy was stored anyway"


def block_the_loop(seconds: float) -> None:
    """What a process short of CPU does to its event loop: nothing else runs meanwhile."""
    time.sleep(seconds)


async def test_a_process_that_runs_late_refuses_posts_until_it_has_caught_up(
    ws, alice, bob, settings
):
    """A Daphne process short of CPU lags every room it serves at once: posts are
    refused as busy while its loop runs late, not stored and sent seconds late to
    everyone, and taken again once it is on time. One short stall refuses nothing."""
    settings.CHATSTACK_BUSY_LAG_MS = 100
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    bob_chat = await ws(user=bob, room="general")
    await joined(bob_chat)
    await alice_chat.send_json_to({"message": "on time", "cid": "a-1"})
    await receive_where(bob_chat, "message", cid="a-1")

    block_the_loop(0.3)  # One stall, as a garbage collection makes.
    await alice_chat.send_json_to({"message": "after a stall", "cid": "a-2"})
    await receive_where(bob_chat, "message", cid="a-2")

    before = busy_count()
    for _ in range(20):  # Bounded: a loop late by 0.3 s on every tick is ~0.2 s behind by 10.
        if LOOP_LAG.behind():
            break
        block_the_loop(0.3)  # Short of CPU: it runs late on every tick.
        await asyncio.sleep(0.01)
    assert LOOP_LAG.behind(), "the loop's lag never counted as behind"
    assert value("chatstack_event_loop_lag_seconds") > 0.1, "the lag missing from /metrics"
    await bob_chat.send_json_to({"message": "while late", "cid": "b-1"})
    assert await receive(bob_chat, "error") == {**BUSY, "cid": "b-1"}
    assert busy_count() == before + 1
    assert not await Message.objects.filter(cid="b-1").aexists(), "a refused post was stored"

    for _ in range(50):  # On time again, the lag decays within a few ticks.
        if not LOOP_LAG.behind():
            break
        await asyncio.sleep(0.1)
    await bob_chat.send_json_to({"message": "while late", "cid": "b-1"})
    await receive_where(alice_chat, "message", cid="b-1")


def with_backpressure(backpressure: Backpressure):
    """The application as Daphne runs it, with a client whose reading the test controls."""

    async def app(scope, receive, send):
        return await application({**scope, "backpressure": backpressure}, receive, send)

    return app


async def test_a_member_who_stops_reading_is_cut_off_and_catches_up_on_reconnect(
    ws, alice, bob, settings
):
    """A member whose connection stopped taking messages is closed with 4008, not
    left to hold the room's traffic in memory; reconnecting, the page gets every
    stored message once, including those posted while it was away."""
    settings.CHATSTACK_SLOW_READER_SECONDS = 0
    before = too_slow_count()
    alice_chat = await ws(user=alice, room="general")
    await joined(alice_chat)
    backpressure = Backpressure()
    bob_chat = await ws(user=bob, room="general", app=with_backpressure(backpressure))
    await joined(bob_chat)

    # A buffer that filled and drained again is a reader keeping up.
    backpressure.pauseProducing()
    backpressure.resumeProducing()
    await alice_chat.send_json_to({"message": "m1"})
    assert (await receive(bob_chat, "message"))["message"] == "m1"

    backpressure.pauseProducing()
    await alice_chat.send_json_to({"message": "m2"})
    error, code = await closed_by_server(bob_chat)
    assert code == CLOSE_TOO_SLOW
    assert "fell too far behind" in error
    assert too_slow_count() == before + 1, "a slow reader's cut missing from /metrics"
    await alice_chat.send_json_to({"message": "m3"})
    # The others' room goes on while one member is slow.
    await receive_where(alice_chat, "message", message="m3")

    again = await ws(user=bob, room="general", app=with_backpressure(Backpressure()))
    history = await joined(again)
    assert [m["message"] for m in history] == ["m1", "m2", "m3"]
    assert [m["message"] for m in await drain(again) if m["type"] == "message"] == []
