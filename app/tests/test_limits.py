"""Limits per account: one budget for all of an account's sockets, processes and hosts."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatstack.chat import limits
from chatstack.chat.limits import AccountSockets, Refusal
from chatstack.chat.models import Message
from chatstack.chat.protocol import CLOSE_LIMITED

from .conftest import url_of
from .metricsutil import value
from .test_settings import load_settings
from .wsutil import closed_by_server, drain, joined, receive

APP_DIR = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000  # A pinned Redis clock, in milliseconds.


@pytest.fixture(autouse=True)
def _redis(redis_client):
    return redis_client


async def test_message_window_slides_at_its_exact_edges(settings):
    """A person who paused for the whole window may post again; not a millisecond earlier."""
    settings.CHATSTACK_RATE_LIMIT_COUNT = 3
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 10
    assert [await limits.take_message(1, T0 + t) for t in (0, 1000, 2000)] == [0] * 3
    # Refused, with the time until the first leaves the window.
    assert await limits.take_message(1, T0 + 2500) == 7.5
    assert await limits.take_message(1, T0 + 9999) == 0.001, "the first is still in the window"
    assert await limits.take_message(1, T0 + 10_000) == 0, "the first left the window"
    # Refused attempts did not count; the one at 1000 is now the oldest.
    assert await limits.take_message(1, T0 + 10_999) == 0.001
    assert await limits.take_message(1, T0 + 11_000) == 0
    assert await limits.take_message(2, T0 + 11_000) == 0, "another account has its own budget"


async def test_message_log_is_bounded_and_expires(redis_client, settings):
    settings.CHATSTACK_RATE_LIMIT_COUNT = 5
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 10
    for _ in range(50):
        await limits.take_message(7)
    key = "chatstack:account:7:messages"
    assert redis_client.zcard(key) == 5
    assert 0 < redis_client.pttl(key) <= 10_000


def _in_processes(code: str, count: int, **env: str) -> list:
    """Runs `code` (which prints JSON) in `count` fresh Python processes at once."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        **env,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=APP_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        results.append(json.loads(out))
    return results


PROCESS_PRELUDE = """
import asyncio, json, os, django
django.setup()
from django.conf import settings
settings.CHATSTACK_PRESENCE_REDIS_URL = os.environ["TEST_REDIS_URL"]
settings.CHATSTACK_RATE_LIMIT_COUNT = 30
settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 7
settings.CHATSTACK_ACCOUNT_MAX_ROOMS = 100
from chatstack.chat import limits
"""


async def test_message_budget_holds_across_processes(redis_client):
    """Four Daphne processes posting for one account get one budget between them."""
    code = PROCESS_PRELUDE + (
        "async def main():\n"
        "    return [await limits.take_message(42) == 0 for _ in range(20)]\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    results = await asyncio.to_thread(_in_processes, code, 4, TEST_REDIS_URL=url_of(redis_client))
    assert sum(sum(taken) for taken in results) == 30


async def test_socket_cap_holds_across_processes(redis_client):
    code = PROCESS_PRELUDE + (
        "async def main():\n"
        "    sockets = [limits.AccountSockets(42, 'r', f'{os.getpid()}!{i}') for i in range(5)]\n"
        "    return [await socket.admit() is None for socket in sockets]\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    results = await asyncio.to_thread(_in_processes, code, 3, TEST_REDIS_URL=url_of(redis_client))
    assert sum(sum(admitted) for admitted in results) == 7


async def test_sockets_of_a_dead_process_stop_counting_after_three_heartbeats(settings):
    """A Daphne process killed with its sockets open must not lock their account out."""
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 2
    ttl = AccountSockets.ttl_ms()
    assert ttl == 3 * settings.CHATSTACK_HEARTBEAT_SECONDS * 1000
    dead = [AccountSockets(1, "r", f"dead!{i}") for i in range(2)]
    for socket in dead:
        assert await socket.admit(T0) is None
    alive = AccountSockets(1, "r", "alive!1")
    assert await alive.admit(T0 + ttl - 1) is Refusal.TOO_MANY_CONNECTIONS
    # One of them is still alive and refreshes on its heartbeat.
    await dead[0].refresh(T0 + ttl - 1)
    assert await alive.admit(T0 + ttl) is None
    assert await AccountSockets(1, "r", "alive!2").admit(T0 + ttl) is Refusal.TOO_MANY_CONNECTIONS


async def test_released_socket_frees_its_place_and_the_key_expires(redis_client, settings):
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 1
    first = AccountSockets(3, "r", "p!1")
    assert await first.admit() is None
    assert await AccountSockets(3, "r", "p!2").admit() is Refusal.TOO_MANY_CONNECTIONS
    assert 0 < redis_client.pttl(first.key) <= AccountSockets.ttl_ms()
    await first.release()
    assert await AccountSockets(3, "r", "p!2").admit() is None


async def test_a_repeated_admission_counts_the_socket_once(redis_client, settings):
    """redis-py repeats an admission whose reply a dropped connection lost: the socket
    that took the account's last place must not be refused by its own first run."""
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 1
    socket = AccountSockets(4, "r", "p!1")
    assert await socket.admit() is None
    assert await socket.admit() is None, "a socket refused by its own retried admission"
    assert redis_client.zcard(socket.key) == 1
    assert await AccountSockets(4, "r", "p!2").admit() is Refusal.TOO_MANY_CONNECTIONS


async def test_rooms_cap_counts_distinct_rooms(settings):
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 10
    settings.CHATSTACK_ACCOUNT_MAX_ROOMS = 2
    assert await AccountSockets(5, "a", "p!1").admit() is None
    assert await AccountSockets(5, "b", "p!2").admit() is None
    assert await AccountSockets(5, "a", "p!3").admit() is None, "another tab of a joined room"
    assert await AccountSockets(5, "c", "p!4").admit() is Refusal.TOO_MANY_ROOMS
    assert await AccountSockets(6, "c", "p!5").admit() is None


# Through the WebSocket consumer.

pytestmark = pytest.mark.django_db(transaction=True)


def refused(reason: Refusal) -> float:
    return value("chatstack_connections_refused_total", reason=reason)


async def test_socket_over_the_account_cap_is_told_why_and_closed(ws, alice, bob, settings):
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 2
    before = refused(Refusal.TOO_MANY_CONNECTIONS)
    first = await ws(user=alice, room="general")
    await joined(first)
    # A socket of the same account held by another Daphne process (or app host).
    elsewhere = AccountSockets(alice.pk, "general", "other-process!chan")
    assert await elsewhere.admit() is None

    third = await ws(user=alice, room="general")
    error, code = await closed_by_server(third)

    assert "Too many open chat windows for this account (at most 2)" in error
    assert code == CLOSE_LIMITED
    assert refused(Refusal.TOO_MANY_CONNECTIONS) == before + 1
    # Other accounts are not affected, and the first socket still works.
    await joined(await ws(user=bob, room="general"))
    await first.send_json_to({"message": "still here"})
    assert (await receive(first, "message"))["message"] == "still here"
    # Once one closes, the account may open another.
    await elsewhere.release()
    await joined(await ws(user=alice, room="general"))


async def test_closed_sockets_give_their_place_back(ws, alice, settings):
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 1
    for _ in range(3):
        chat = await ws(user=alice)
        await joined(chat)
        await chat.disconnect()


async def test_room_over_the_account_cap_is_told_why_and_closed(ws, alice, settings):
    settings.CHATSTACK_ACCOUNT_MAX_ROOMS = 2
    before = refused(Refusal.TOO_MANY_ROOMS)
    for room in ("a", "b", "a"):
        await joined(await ws(user=alice, room=room))

    error, code = await closed_by_server(await ws(user=alice, room="c"))

    assert "Too many rooms open at once for this account (at most 2)" in error
    assert code == CLOSE_LIMITED
    assert refused(Refusal.TOO_MANY_ROOMS) == before + 1


async def test_message_budget_is_shared_by_all_sockets_of_an_account(ws, alice, bob, settings):
    """More sockets must not mean more messages."""
    settings.CHATSTACK_RATE_LIMIT_COUNT = 3
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    sockets = [await ws(user=alice, room=room) for room in ("a", "b", "a")]
    for chat in sockets:
        await joined(chat)
    for i, chat in enumerate(sockets * 2):
        await chat.send_json_to({"message": f"m{i}"})

    frames = [frame for chat in sockets for frame in await drain(chat)]
    errors = [frame["error"] for frame in frames if frame["type"] == "error"]

    assert await Message.objects.filter(author=alice).acount() == 3
    assert len(errors) == 3
    assert all("from your account" in error for error in errors)
    # Another account's budget is untouched.
    bob_chat = await ws(user=bob, room="a")
    await joined(bob_chat)
    await bob_chat.send_json_to({"message": "bob"})
    assert (await receive(bob_chat, "message"))["message"] == "bob"


def test_limits_default_to_what_people_need(env):
    loaded = load_settings()
    assert loaded["CHATSTACK_ACCOUNT_MAX_CONNECTIONS"] == 20
    assert loaded["CHATSTACK_ACCOUNT_MAX_ROOMS"] == 10
    assert loaded["CHATSTACK_MESSAGE_RETENTION_DAYS"] == 365
    assert loaded["CHATSTACK_SIGNUP"] == "open"
    # The sliding window never lets through more than a person types.
    assert loaded["CHATSTACK_RATE_LIMIT_COUNT"] / loaded["CHATSTACK_RATE_LIMIT_SECONDS"] <= 1


async def test_a_flood_past_the_budget_costs_redis_nothing(ws, alice, settings, monkeypatch):
    settings.CHATSTACK_RATE_LIMIT_COUNT = 3
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    asked = []
    take_message = limits.take_message

    async def counted(*args):
        asked.append(args)
        return await take_message(*args)

    monkeypatch.setattr(limits, "take_message", counted)
    chat = await ws(user=alice)
    await joined(chat)
    for i in range(50):
        await chat.send_json_to({"message": f"m{i}"})
    frames = await drain(chat)

    assert [f["type"] for f in frames].count("error") == 47
    # Three taken, one refused with the wait; the rest refused without asking.
    assert len(asked) == 4


async def test_message_is_refused_not_lost_when_the_limit_cannot_be_checked(ws, alice, monkeypatch):
    """Without Redis the budget is unknown: the sender is told, and may retry."""

    async def unreachable(*args):
        raise ConnectionError("redis went away")

    chat = await ws(user=alice)
    await joined(chat)
    monkeypatch.setattr(limits, "take_message", unreachable)
    await chat.send_json_to({"message": "hello"})
    assert (await receive(chat, "error"))["error"] == "Message not sent, try again."
    assert await Message.objects.acount() == 0
