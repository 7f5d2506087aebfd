"""Abusive clients: the server stays up and a well-behaved pair in another room is unaffected.

Everything is bounded: a fixed number of connections and frames, and one
deadline per test. Traffic goes only to the container's port on 127.0.0.1.
"""

import asyncio
import contextlib
import ipaddress
import itertools
import json
import re
import statistics
import time
import urllib.parse
import uuid

import pytest
from chatclient import (
    CSRF_INPUT,
    accounts_made_on,
    manage_shell,
    next_of_type,
    posted_by,
    refusal,
    stored_messages,
)
from hostmetrics import daphne_metrics, redis_memory
from playbook import run_playbook
from testhost import DAPHNE, main_pid
from waiting import wait_until
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
RATE_SECONDS = 10
ACCOUNT_MAX_CONNECTIONS = 20
ACCOUNT_MAX_ROOMS = 10
# nginx_login_rate's and nginx_login_burst's defaults; fail2ban's jail of
# Nginx's login zone.
LOGIN_RATE_PER_MINUTE = 10
LOGIN_BURST = 10
LOGIN_JAIL = "nginx-limit-req"
LOGIN_MAXRETRY = 5  # baseline_fail2ban_maxretry
# One account's sockets, half again its cap; each posts as fast as it can
# for FLOOD_SECONDS while a calm user posts CALM_MESSAGES, one per CALM_PAUSE.
FLOOD_SOCKETS = 30
FLOOD_SECONDS = 15
# Fifty frames a second per socket, a thousand in all: far beyond any person,
# within what this test's one client process can send and read back.
FLOOD_PAUSE = 0.02
CALM_MESSAGES = 12
# Eight messages per RATE_SECONDS: busy, yet inside the calm user's own budget.
CALM_PAUSE = 1.25
# Generous: the target is 100 ms, but the shared test machine is slow.
CALM_ROUND_TRIP = 2.0
# Accounts that each open ACCOUNT_MAX_ROOMS rooms and try one more, so many
# at once, their upgrades paced below Nginx's rate per client.
ROOM_ACCOUNTS = 100
ROOM_ACCOUNTS_AT_ONCE = 20
UPGRADES_PER_SECOND = 15
# What a room may leave in Redis: its newest id and presence keys take a few
# hundred bytes; more means something keeps per-room state it should not.
REDIS_BYTES_PER_ROOM = 1024
CONNECTIONS = "chatstack_websocket_connections"
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
        error, code = await refusal(extra)
        assert "Too many open chat windows" in error
        assert code == CLOSE_LIMITED

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


async def flood(ws, tag: str, until: float) -> tuple[int, int, list[str]]:
    """Posts on `ws`, a frame per FLOOD_PAUSE, until `until` (time.monotonic()); once every
    frame was answered: how many it sent, how many came back posted, the errors."""
    sent, posted, errors = 0, 0, []
    answered = asyncio.Event()

    async def read() -> None:
        nonlocal posted
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message" and frame["message"].startswith(tag):
                posted += 1
            elif frame["type"] == "error":
                errors.append(frame["error"])
            answered.set()

    reader = asyncio.create_task(read())
    try:
        while time.monotonic() < until:
            await ws.send(json.dumps({"message": f"{tag}{sent}"}))
            sent += 1
            await asyncio.sleep(FLOOD_PAUSE)
        async with asyncio.timeout(DEADLINE / 4):
            while posted + len(errors) < sent:
                answered.clear()
                await answered.wait()
    finally:
        reader.cancel()
    return sent, posted, errors


def windows_spanned(times: list[float], seconds: float) -> int:
    """How many windows of `seconds` it takes to cover `times`, with a second of
    slack for the moments between taking a message's place and storing it."""
    return int((max(times) - min(times) + 1) // seconds) + 1


def test_one_account_with_many_sockets_gets_one_budget(fresh_accounts, room, host, record_time):
    """An account with more sockets than it may hold, over both Daphne processes,
    posting as fast as it can, gets the sockets and the messages of one person:
    otherwise one script floods every room it is in and fills the database. A
    calm user in the same room keeps chatting, and nothing is dropped silently."""
    alice, bob, mallory = fresh_accounts(3)
    # As many rooms as the account may open: Nginx sends each room to one
    # Daphne process, so the sockets spread over both.
    rooms = [room] + [f"{room}-{n}" for n in range(1, ACCOUNT_MAX_ROOMS)]

    async def run():
        async with alice.websocket(room) as calm, bob.websocket(room) as observer:
            await next_of_type(calm, "history")
            await next_of_type(observer, "history")
            before = daphne_metrics(host)
            owners = itertools.cycle(rooms)
            sockets = await open_all(FLOOD_SOCKETS, lambda: mallory.websocket(next(owners)))
            try:
                refusals = await asyncio.gather(*(refusal(ws) for ws in sockets))
                admitted = [
                    ws for ws, refused in zip(sockets, refusals, strict=True) if refused is None
                ]
                during = daphne_metrics(host)
                held = {
                    port: during[port][CONNECTIONS] - before[port][CONNECTIONS] for port in during
                }
                print(f"{len(admitted)} sockets of one account held, per Daphne port: {held}")

                seen: dict[str, list[float]] = {}
                arrived = asyncio.Event()

                async def observe() -> None:
                    while True:
                        frame = json.loads(await observer.recv())
                        if frame["type"] == "message":
                            seen.setdefault(frame["message"], []).append(time.monotonic())
                            arrived.set()

                calm_errors = []

                async def drain() -> None:
                    while True:
                        frame = json.loads(await calm.recv())
                        if frame["type"] == "error":
                            calm_errors.append(frame["error"])
                            arrived.set()

                async def chat() -> dict[str, float]:
                    sent_at = {}
                    for n in range(CALM_MESSAGES):
                        sent_at[f"calm {n}"] = time.monotonic()
                        await calm.send(json.dumps({"message": f"calm {n}"}))
                        await asyncio.sleep(CALM_PAUSE)
                    return sent_at

                readers = [asyncio.create_task(observe()), asyncio.create_task(drain())]
                until = time.monotonic() + FLOOD_SECONDS
                try:
                    sent_at, *floods = await asyncio.gather(
                        chat(),
                        *(flood(ws, f"flood {index} ", until) for index, ws in enumerate(admitted)),
                    )
                    async with asyncio.timeout(15):
                        while not calm_errors and not all(text in seen for text in sent_at):
                            arrived.clear()
                            await arrived.wait()
                finally:
                    for reader in readers:
                        reader.cancel()
            finally:
                for ws in sockets:
                    ws.transport.abort()
        return refusals, held, floods, sent_at, seen, calm_errors

    refusals, held, floods, sent_at, seen, calm_errors = asyncio.run(
        asyncio.wait_for(run(), DEADLINE)
    )

    refused = [refused for refused in refusals if refused is not None]
    assert len(refused) == FLOOD_SOCKETS - ACCOUNT_MAX_CONNECTIONS, (
        f"one account held {FLOOD_SOCKETS - len(refused)} sockets, not at most "
        f"{ACCOUNT_MAX_CONNECTIONS}"
    )
    for error, code in refused:
        assert "Too many open chat windows" in error and code == CLOSE_LIMITED, (error, code)
    assert all(count > 0 for count in held.values()), (
        f"the account's sockets were all on one Daphne process ({held}): the shared cap "
        "was not put to the test"
    )

    sent = sum(count for count, _, _ in floods)
    posted = sum(count for _, count, _ in floods)
    errors = [error for _, _, errors in floods for error in errors]
    stored = posted_by(host, mallory.username)
    print(f"one account, {len(floods)} sockets: {sent} messages sent, {len(stored)} stored")
    for count, echoed, refusals_of_socket in floods:
        assert echoed + len(refusals_of_socket) == count, "a message got neither posted nor refused"
    assert all(error.startswith("Slow down") for error in errors), set(errors)
    assert len(stored) == posted, "what the sockets saw posted differs from what was stored"
    assert stored, "the flood posted nothing: the budget was not put to the test"
    budget = RATE_LIMIT * windows_spanned([created for _, created in stored], RATE_SECONDS)
    assert len(stored) <= budget, f"{len(stored)} messages stored, the budget was {budget}"
    in_room = [text for text in seen if text.startswith("flood ")]
    assert len(in_room) == sum(room_of == room for room_of, _ in stored), (
        "a member of the room was not sent every message stored in it"
    )

    assert calm_errors == [], "the calm user's messages were refused"
    assert all(len(seen[text]) == 1 for text in seen), "a member was sent a message twice"
    round_trips = sorted(seen[text][0] - sent_at[text] for text in sent_at)
    record_time(
        "calm user's round trip during one account's flood, p50", statistics.median(round_trips)
    )
    record_time("calm user's round trip during one account's flood, max", round_trips[-1])
    assert round_trips[-1] < CALM_ROUND_TRIP, f"the calm user waited up to {round_trips[-1]:.1f}s"


def test_many_room_names_leave_redis_bounded(fresh_accounts, host, record_time):
    """Accounts naming ever new rooms are held to a few open rooms each, and what
    each room leaves in Redis is small and expires: otherwise a script naming
    rooms fills Redis' memory, and the chat stops for everyone."""
    accounts = fresh_accounts(ROOM_ACCOUNTS)
    prefix = f"names-{uuid.uuid4().hex[:8]}"
    before = redis_memory(host)

    async def run() -> list:
        gate = asyncio.Semaphore(ROOM_ACCOUNTS_AT_ONCE)
        start, tickets = time.monotonic(), itertools.count()

        async def upgrade(account, name: str):
            # Below the rate at which Nginx admits one client's upgrades.
            await asyncio.sleep(
                max(0.0, start + next(tickets) / UPGRADES_PER_SECOND - time.monotonic())
            )
            return await account.websocket(name)

        async def one(index: int, account) -> tuple[str, int | None]:
            async with gate:
                sockets = []
                try:
                    for n in range(ACCOUNT_MAX_ROOMS):
                        ws = await upgrade(account, f"{prefix}-{index}-{n}")
                        sockets.append(ws)
                        assert await refusal(ws) is None, f"room {n + 1} of an account was refused"
                        # A message makes the room's longest-lived key, its newest id.
                        await ws.send(json.dumps({"message": "hello"}))
                        await next_of_type(ws, "message")
                    extra = await upgrade(account, f"{prefix}-{index}-extra")
                    sockets.append(extra)
                    return await refusal(extra)
                finally:
                    for ws in sockets:
                        ws.transport.abort()

        return await asyncio.gather(
            *(one(index, account) for index, account in enumerate(accounts))
        )

    start = time.monotonic()
    refused = asyncio.run(asyncio.wait_for(run(), DEADLINE))
    record_time(
        f"{ROOM_ACCOUNTS * (ACCOUNT_MAX_ROOMS + 1)} room names tried", time.monotonic() - start
    )
    for error, code in refused:
        assert "Too many rooms open at once" in error and code == CLOSE_LIMITED, (error, code)

    after = redis_memory(host)
    rooms = ROOM_ACCOUNTS * ACCOUNT_MAX_ROOMS
    # The dataset: used_memory also counts the buffers of whatever connections are
    # open at that moment (0.8 MB more in one run on a busy machine), not rooms.
    growth = after["used_memory_dataset"] - before["used_memory_dataset"]
    print(
        f"{rooms} rooms: Redis used_memory {before['used_memory']} -> {after['used_memory']} "
        f"({growth / rooms:.0f} bytes per room), dataset "
        f"{before['used_memory_dataset']} -> {after['used_memory_dataset']}, "
        f"keys {before['keys']} -> {after['keys']}"
    )
    assert growth < rooms * REDIS_BYTES_PER_ROOM, (
        f"each room left {growth / rooms:.0f} bytes in Redis: room names would fill it"
    )


def banned_addresses(host) -> list[str]:
    status = host.check_output(f"fail2ban-client status {LOGIN_JAIL}")
    return re.search(r"Banned IP list:(.*)", status).group(1).split()


def test_admin_login_guessing_is_throttled_then_banned(host, site):
    """Guessing a superuser's password at /admin/login/ is answered 429 after a few
    tries and, once fail2ban stops ignoring the guesser's address, gets it banned:
    otherwise a script guesses for ever, and its PBKDF2 checks stall every page."""
    guesser = site.session()
    guesses = itertools.count()
    # Fetched once (GETs are not limited): a script posts guesses with one token.
    token = CSRF_INPUT.search(guesser.request("/admin/login/")[2]).group(1)

    def guess() -> int:
        fields = {"username": "admin", "password": f"guess {next(guesses)}"}
        return guesser.request("/admin/login/", {"csrfmiddlewaretoken": token, **fields})[0]

    def site_answers() -> bool:
        try:
            return site.session().request("/accounts/login/")[0] == 200
        except OSError:
            return False

    start = time.monotonic()
    statuses = [guess()]
    while statuses[-1] != 429 and len(statuses) < 4 * LOGIN_BURST:
        statuses.append(guess())
    assert statuses[-1] == 429, f"{len(statuses)} password guesses, none refused: {statuses}"
    # The burst, and what the rate gave back while the guesses were checked.
    allowed = LOGIN_BURST + 1 + int((time.monotonic() - start) * LOGIN_RATE_PER_MINUTE / 60)
    assert len(statuses) - 1 <= allowed, f"{len(statuses) - 1} guesses checked before a 429"

    # The address Nginx sees the guesser at, which fail2ban would ban.
    log = host.check_output("tail -n 100 /var/log/nginx/error.log")
    client = re.findall(r"limiting requests, .*client: ([^,]+), .*POST /admin/login/", log)[-1]
    assert client not in banned_addresses(host)
    ignored = [
        network
        for network in re.findall(
            r"^[|`]- (\S+)$", host.check_output(f"fail2ban-client get {LOGIN_JAIL} ignoreip"), re.M
        )
        if ipaddress.ip_address(client) in ipaddress.ip_network(network, strict=False)
    ]
    assert ignored, f"fail2ban bans the test runner ({client}), which every test needs"

    def guessed_until_banned() -> bool:
        # More refused guesses than the jail allows between two looks at it
        # (each look at the host takes seconds, the zone refills every six).
        for _ in range(LOGIN_MAXRETRY + 1):
            with contextlib.suppress(OSError):
                guess()
        return client in banned_addresses(host)

    try:
        # What an operator's jail does for any address it does not ignore.
        for network in ignored:
            host.check_output(f"fail2ban-client set {LOGIN_JAIL} delignoreip {network}")
        wait_until(guessed_until_banned, 60, f"fail2ban banning the guesser {client}", 0.2)
        assert not site_answers(), "the banned guesser still reaches the site"
    finally:
        host.run(f"fail2ban-client set {LOGIN_JAIL} unbanip {client}")
        for network in ignored:
            host.run(f"fail2ban-client set {LOGIN_JAIL} addignoreip {network}")
        # Empties the login zone's memory, which the guessing filled: the later
        # tests sign up from the same address.
        host.run("systemctl restart nginx")
    wait_until(site_answers, 30, "the site answering the unbanned test runner")


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
    found = manage_shell(host, REDIS_KEYS)
    print(f"Redis keys after the abuse tests: {found['keys']}")
    assert found["keys"] > 0, "the abuse left no key at all: the scan looked in the wrong place"
    assert found["forever"] == []
