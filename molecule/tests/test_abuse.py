"""Abusive clients: the server stays up and a well-behaved pair in another room is unaffected.

Everything is bounded: a fixed number of connections and frames, and one
deadline per test. Traffic goes only to the container's port on 127.0.0.1.
"""

import asyncio
import itertools
import json
import shlex
import time
import urllib.parse
import uuid

import pytest
from chatclient import accounts_made_on, next_of_type, stored_messages
from playbook import run_playbook
from test_faults import DAPHNE, main_pid
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

pytestmark = pytest.mark.destructive

IDLE_TCP = 100
IDLE_WEBSOCKETS = 200
SLOW_READERS = 20
FLOODERS = 5
BURST = 200
DEADLINE = 120
# The app's CHATSTACK_MESSAGE_MAX_LENGTH, CHATSTACK_RATE_LIMIT_COUNT (per
# account) and CHATSTACK_ACCOUNT_MAX_CONNECTIONS defaults.
MAX_LENGTH = 2000
RATE_LIMIT = 10
ACCOUNT_MAX_CONNECTIONS = 20
# Close code of a socket refused because its account is at a limit.
CLOSE_LIMITED = 4029
# Daphne's --websocket-max-message-size default: larger frames cost the sender its connection.
DAPHNE_MAX_MESSAGE = 1024 * 1024


@pytest.fixture(scope="module")
def people(site):
    prefix = uuid.uuid4().hex[:8]
    people = {name: site.session() for name in ("alice", "bob", "mallory")}
    for name, session in people.items():
        session.signup(f"{name}{prefix}")
    return people


@pytest.fixture(scope="module")
def crowd(site, host):
    """Accounts that each hold as many sockets as one account may."""
    prefix = uuid.uuid4().hex[:6]
    return accounts_made_on(
        host,
        site,
        [f"crowd{prefix}{index}" for index in range(IDLE_WEBSOCKETS // ACCOUNT_MAX_CONNECTIONS)],
    )


@pytest.fixture
def fresh_accounts(site, host):
    """Makes new signed-in accounts, so no earlier test's sockets or messages count."""
    return lambda count: accounts_made_on(
        host, site, [f"a{uuid.uuid4().hex[:12]}" for _ in range(count)]
    )


@pytest.fixture
def room():
    return f"abuse-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def server_stays_up(host):
    daphne = main_pid(host, DAPHNE)
    yield
    assert main_pid(host, DAPHNE) == daphne, "daphne died under abuse"
    assert host.check_output("systemctl --failed --no-legend --plain") == ""


async def round_trip(ws_from, ws_to, text: str) -> float:
    start = time.monotonic()
    await ws_from.send(json.dumps({"message": text}))
    while (await next_of_type(ws_to, "message", timeout=15))["message"] != text:
        pass
    return time.monotonic() - start


async def open_all(count: int, opener, parallel: int = 20, per_second: float = 0) -> list:
    """Opens `count` connections, at most `parallel` at a time, started at `per_second`."""
    gate = asyncio.Semaphore(parallel)

    async def one(index: int):
        if per_second:
            await asyncio.sleep(index / per_second)
        async with gate:
            return await opener()

    return await asyncio.gather(*(one(index) for index in range(count)))


def calm_pair_while(people, host, record_time, label: str, abuser) -> None:
    """Runs `abuser(opened)` while Alice and Bob chat in a room of their own.

    The abuser appends what it opens to `opened`; all of it is aborted at the
    end, rather than closed politely, as clients that never read would make a
    polite close wait.
    """
    calm = f"calm-{uuid.uuid4().hex[:8]}"

    async def run() -> dict[str, float]:
        opened = []
        async with (
            people["alice"].websocket(calm) as ws_a,
            people["bob"].websocket(calm) as ws_b,
        ):
            await next_of_type(ws_a, "history")
            await next_of_type(ws_b, "history")
            timings = {"before": await round_trip(ws_a, ws_b, "before")}
            try:
                await abuser(opened)
                timings["during"] = await round_trip(ws_b, ws_a, "during")
            finally:
                for connection in opened:
                    connection.transport.abort()
            timings["after"] = await round_trip(ws_a, ws_b, "after")
        return timings

    timings = asyncio.run(asyncio.wait_for(run(), timeout=DEADLINE))
    for when, seconds in timings.items():
        record_time(f"{label}: calm pair's round trip {when}", seconds)
    assert [m["text"] for m in stored_messages(host, calm)] == ["before", "during", "after"]


async def presence_becomes(ws, users: list[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while (await next_of_type(ws, "presence", timeout=timeout))["users"] != users:
            pass


# Hundreds of connections coming or going at once once exhausted redis-py's
# default pool of 100 (MaxConnectionsError) and left ghosts in the room.
def test_idle_connections(people, crowd, room, host, https_base_url, record_time):
    port = urllib.parse.urlsplit(https_base_url).port
    bob = people["bob"].username

    async def abuser(opened):
        # Connections that never even start a TLS handshake.
        for _ in range(IDLE_TCP):
            opened.append((await asyncio.open_connection("127.0.0.1", port))[1])
        start = time.monotonic()
        # Nginx admits WebSocket upgrades from one address at nginx_websocket_rate
        # (20/s after a burst of 100) and answers 429 above it: stay below.
        members = itertools.cycle(crowd)
        sockets = await open_all(
            IDLE_WEBSOCKETS, lambda: next(members).websocket(room), per_second=15
        )
        opened.extend(sockets)
        await asyncio.gather(*(next_of_type(ws, "history") for ws in sockets))
        record_time(f"opening {IDLE_WEBSOCKETS} websockets in one room", time.monotonic() - start)
        await asyncio.sleep(2)
        dropped = sum(ws.state is not State.OPEN for ws in sockets)
        assert dropped == 0, f"the server dropped {dropped} of {IDLE_WEBSOCKETS} idle websockets"

        # Each account of the crowd holds all the sockets one account may.
        extra = await crowd[0].websocket(room)
        opened.append(extra)
        assert "Too many open chat windows" in (await next_of_type(extra, "error"))["error"]
        with pytest.raises(ConnectionClosed) as closed:
            await extra.recv()
        assert closed.value.rcvd.code == CLOSE_LIMITED

        # Joins after Mallory's crowd, so every presence it sees lists her until they leave.
        watcher = await people["bob"].websocket(room)
        opened.append(watcher)
        await next_of_type(watcher, "history")
        start = time.monotonic()
        for ws in sockets:
            ws.transport.abort()
        await presence_becomes(watcher, [bob], timeout=15)
        record_time(f"{IDLE_WEBSOCKETS} leave at once: presence updated", time.monotonic() - start)

    calm_pair_while(people, host, record_time, "idle connections", abuser)


def test_garbage_frames(people, room, host, record_time):
    async def error_for(ws, frame: str | bytes) -> str:
        await ws.send(frame)
        return (await next_of_type(ws, "error"))["error"]

    async def abuser(opened):
        ws = await people["mallory"].websocket(room)
        opened.append(ws)
        await next_of_type(ws, "history")
        assert "Binary" in await error_for(ws, b"\x00\xff" * 1024)
        assert "JSON" in await error_for(ws, '{"message": "unterminated')
        assert "JSON object" in await error_for(ws, "[1, 2, 3]")
        assert "too long" in await error_for(ws, "x" * (DAPHNE_MAX_MESSAGE // 2))
        assert "too long" in await error_for(ws, json.dumps({"message": "y" * (MAX_LENGTH + 1)}))
        for n in range(BURST):
            await ws.send(json.dumps({"message": f"burst {n}"}))
        errors = [(await next_of_type(ws, "error"))["error"] for _ in range(BURST - RATE_LIMIT)]
        assert all(error.startswith("Slow down") for error in errors)

        ws = await people["mallory"].websocket(room)
        opened.append(ws)
        await next_of_type(ws, "history")
        await ws.send("z" * (4 * DAPHNE_MAX_MESSAGE))
        with pytest.raises(ConnectionClosed):
            await next_of_type(ws, "error")

    calm_pair_while(people, host, record_time, "garbage frames", abuser)
    # Garbage counts against the rate limit too, so at most one window's worth was stored.
    assert len(stored_messages(host, room)) <= RATE_LIMIT


def test_slow_readers(people, fresh_accounts, room, host, record_time):
    # Accounts of their own: the limits are per account, and a flooder's budget
    # is RATE_LIMIT messages per window.
    sloth, *flooder_accounts = fresh_accounts(1 + FLOODERS)

    async def abuser(opened):
        # With a one-frame queue the client stops reading from its socket, so
        # the server has to hold what the flooders send them.
        slow = await open_all(SLOW_READERS, lambda: sloth.websocket(room, max_queue=1))
        opened.extend(slow)
        flooders = await asyncio.gather(*(account.websocket(room) for account in flooder_accounts))
        opened.extend(flooders)
        for ws in flooders:
            for n in range(RATE_LIMIT):
                await ws.send(json.dumps({"message": f"{n} " + "x" * (MAX_LENGTH - 8)}))
        for ws in flooders:
            # The room keeps delivering to everyone who reads.
            for _ in range(FLOODERS * RATE_LIMIT):
                await next_of_type(ws, "message")

    calm_pair_while(people, host, record_time, "slow readers", abuser)
    assert len(stored_messages(host, room)) == FLOODERS * RATE_LIMIT


def test_one_client_holds_a_bounded_number_of_websockets(
    host, container, fresh_accounts, room, tmp_path
):
    """Many accounts behind one address (or /64) cannot hold more WebSockets than
    nginx_websocket_connections_per_client: the next upgrade is answered 429."""
    limit = 30
    accounts = fresh_accounts(limit // ACCOUNT_MAX_CONNECTIONS + 1)

    def nginx_with(*args: str, name: str) -> None:
        run_dir = tmp_path / name
        run_dir.mkdir()
        result, _ = run_playbook(container, run_dir, "--tags", "nginx", *args)
        assert result.returncode == 0, result.stdout[-3000:]

    async def hold_one_too_many(opened: list) -> int:
        # The first `limit` fill the client's share, ACCOUNT_MAX_CONNECTIONS per account.
        owners = iter([accounts[index // ACCOUNT_MAX_CONNECTIONS] for index in range(limit)])
        opened.extend(await open_all(limit, lambda: next(owners).websocket(room)))
        with pytest.raises(InvalidStatus) as refused:
            opened.append(await accounts[-1].websocket(room))
        return refused.value.response.status_code

    async def close(opened: list) -> None:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)

    nginx_with("-e", json.dumps({"nginx_websocket_connections_per_client": limit}), name="low")
    opened = []
    try:
        status = asyncio.run(hold_one_too_many(opened))
    finally:
        asyncio.run(close(opened))
        nginx_with(name="restored")
    assert status == 429
    assert (
        host.check_output("grep -c 'limiting connections by zone' /var/log/nginx/error.log") != "0"
    )


# Every key of the app's Redis, and those of them without an expiry.
REDIS_KEYS = """
import json, redis
from django.conf import settings
client = redis.Redis.from_url(settings.CHATSTACK_PRESENCE_REDIS_URL)
keys = list(client.scan_iter(count=1000))
forever = [key.decode() for key in keys if client.pttl(key) == -1]
print(json.dumps({"keys": len(keys), "forever": forever[:20]}))
"""


def test_every_redis_key_left_by_the_abuse_expires(host):
    """After the crowds, floods and room names above, nothing stays in Redis for good:
    otherwise every new room name or account would fill it, and volatile-lru could
    evict only the keys that do expire (presence, limits)."""
    output = host.check_output(f"chatstack-manage shell -c {shlex.quote(REDIS_KEYS)}")
    found = json.loads(output.splitlines()[-1])
    print(f"Redis keys after the abuse tests: {found['keys']}")
    assert found["keys"] > 0, "the abuse left no key at all: the scan looked in the wrong place"
    assert found["forever"] == []
