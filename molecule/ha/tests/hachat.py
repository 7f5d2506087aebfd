"""Scripted members and a person in a real browser chatting through a fault, and what
they must have seen.

Shared by the ha scenario's fault tests.
"""

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import testinfra
from chatbrowser import ChatUser
from chatclient import next_of_type, stored_messages
from conftest import LB_HOSTS
from testhost import container_state
from waiting import wait_until
from websockets.exceptions import ConnectionClosed, WebSocketException

USERS = 4
# Half the per-account rate limit (README "Limits and abuse": 10 in 10 s): what a
# fault held up is sent again on top without being refused for the rate.
POST_INTERVAL_SECONDS = 2
TRAFFIC_BEFORE_FAULT_SECONDS = 5
# The person in the browser types this many, a few seconds apart, through the fault.
PERSON_POSTS = 12
PERSON_POST_INTERVAL_SECONDS = 2.5
# A generous functional bound; the measured time is printed.
RESUME_BOUND_SECONDS = 60
# A post shown everywhere later than this after it was posted was held up by the fault.
DELAYED_SECONDS = 1
# After chat resumed, this much traffic shows it stays resumed.
TRAFFIC_AFTER_RESUME_SECONDS = 10


class Member:
    """One scripted browser tab: posts with a cid, retries unacknowledged posts
    after a reconnect (as the page does), and records every message it shows."""

    def __init__(self, user, room: str):
        self.user, self.room = user, room
        self.name = user.username
        self.socket = None
        # message id -> (text, when it first showed)
        self.shown: dict[int, tuple[str, float]] = {}
        # cid -> (text, when posted); acknowledged ones move to `stored`.
        self.pending: dict[str, tuple[str, float]] = {}
        # cid -> (message id, when posted)
        self.stored: dict[str, tuple[int, float]] = {}
        # (when the lost connection was noticed, when the next one was up), monotonic.
        self.outages: list[tuple[float, float]] = []
        # cid -> the reason of the last error frame about it (what the page would show).
        self.refusals: dict[str, str] = {}

    def show(self, frame: dict) -> None:
        self.shown.setdefault(frame["id"], (frame["message"], time.monotonic()))
        if frame.get("user") == self.name and frame.get("cid") in self.pending:
            _, posted = self.pending.pop(frame["cid"])
            self.stored[frame["cid"]] = (frame["id"], posted)

    async def connect(self) -> None:
        deadline = time.monotonic() + RESUME_BOUND_SECONDS
        while True:
            try:
                socket = await self.user.websocket(self.room)
                for message in (await next_of_type(socket, "history", timeout=15))["messages"]:
                    self.show(message)
                break
            except (OSError, TimeoutError, WebSocketException):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        self.socket = socket
        for cid in list(self.pending):
            await self.send(cid)

    async def send(self, cid: str) -> None:
        text, _ = self.pending[cid]
        with contextlib.suppress(ConnectionClosed):
            await self.socket.send(json.dumps({"message": text, "cid": cid}))

    async def post(self, text: str) -> None:
        cid = uuid.uuid4().hex
        self.pending[cid] = (text, time.monotonic())
        await self.send(cid)

    async def listen(self, done: asyncio.Event) -> None:
        # cid -> when to send again a post the server refused (it offers "try again").
        retries: dict[str, float] = {}
        while not done.is_set():
            for cid in [cid for cid, due in retries.items() if due < time.monotonic()]:
                del retries[cid]
                if cid in self.pending:
                    await self.send(cid)
            try:
                frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout=1))
            except TimeoutError:
                continue
            except ConnectionClosed:
                noticed = time.monotonic()
                await self.connect()
                self.outages.append((noticed, time.monotonic()))
                continue
            if frame["type"] == "message":
                self.show(frame)
            elif frame["type"] == "error" and frame.get("cid") in self.pending:
                self.refusals[frame["cid"]] = frame.get("reason", frame.get("message", ""))
                retries[frame["cid"]] = time.monotonic() + 1


def resumed_after(members: list[Member], faulted: float) -> float | None:
    """Seconds from the fault until chat was back: until the last post it held up (shown
    to every member more than DELAYED_SECONDS after it was posted) showed everywhere.
    None while a post still misses someone or waits for its echo that long, and until
    TRAFFIC_AFTER_RESUME_SECONDS of chat after it."""
    now = time.monotonic()
    if any(
        posted > faulted and now - posted > DELAYED_SECONDS
        for member in members
        for _, posted in member.pending.values()
    ):
        return None
    resumed = 0.0
    for member in members:
        for message_id, posted in member.stored.values():
            if posted <= faulted:
                continue
            if not all(message_id in other.shown for other in members):
                return None
            shown = max(other.shown[message_id][1] for other in members)
            if shown - posted > DELAYED_SECONDS:
                resumed = max(resumed, shown - faulted)
    if now - faulted < resumed + TRAFFIC_AFTER_RESUME_SECONDS:
        return None
    return resumed


async def chat_while(members: list[Member], fault, awaited: list[str]) -> float:
    """Members chat while `fault` runs, and listen until each has shown the `awaited`
    texts (posted by others); returns the seconds until chat resumed."""
    for member in members:
        await member.connect()
    done = asyncio.Event()
    listeners = [asyncio.create_task(member.listen(done)) for member in members]

    # Numbered across both rounds of talk(): the check for doubles compares texts.
    numbers = itertools.count()

    async def talk(until):
        while not until():
            n = next(numbers)
            for member in members:
                await member.post(f"{member.name} {n}")
            await asyncio.sleep(POST_INTERVAL_SECONDS)

    started = time.monotonic()
    await talk(lambda: time.monotonic() - started > TRAFFIC_BEFORE_FAULT_SECONDS)
    faulted = time.monotonic()
    # People go on posting while the fault happens (a host's stop takes seconds).
    faulting = asyncio.create_task(asyncio.to_thread(fault))
    resumed = None

    def over():
        nonlocal resumed
        resumed = resumed_after(members, faulted)
        if time.monotonic() - faulted > RESUME_BOUND_SECONDS + TRAFFIC_AFTER_RESUME_SECONDS:
            stuck = {member.name: len(member.pending) for member in members}
            shown = {member.name: len(member.shown) for member in members}
            raise AssertionError(
                f"chat did not resume within {RESUME_BOUND_SECONDS}s of the fault:"
                f" unacknowledged posts {stuck}, messages shown {shown}"
            )
        return resumed is not None

    await talk(over)
    await faulting
    print(f"connections lost and back, seconds after the fault: {outages(members, faulted)}")
    # The last posts' echoes and deliveries.
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: all(not member.pending for member in members) or None,
            30,
            "every post acknowledged after the failover",
        )
    except AssertionError as unanswered:
        now = time.monotonic()
        raise AssertionError(
            f"{unanswered}; {summary(members)}; unanswered posts:"
            + "".join(
                f" {member.name}: {text!r} posted {now - posted:.0f}s ago,"
                f" last refused for {member.refusals.get(cid)!r}"
                f" (reconnects {len(member.outages)})"
                for member in members
                for cid, (text, posted) in member.pending.items()
            )
        ) from None
    await asyncio.to_thread(
        wait_until,
        lambda: (
            all(set(awaited) <= {text for text, _ in member.shown.values()} for member in members)
            or None
        ),
        RESUME_BOUND_SECONDS + PERSON_POSTS * PERSON_POST_INTERVAL_SECONDS,
        "every member shown what the person typed",
    )
    await asyncio.sleep(0)
    done.set()
    await asyncio.gather(*listeners)
    for member in members:
        await member.socket.close()
    return resumed


def chat_through(members: list[Member], person: ChatUser, fault) -> float:
    """Members and a person in a browser chat while `fault` runs; returns the seconds
    until chat resumed, checking that every acknowledged post and everything the
    person typed was stored once and shown to everyone, without a reload."""
    room = members[0].room
    person.open_room(room)
    typed = [f"{person.username} {n}" for n in range(PERSON_POSTS)]
    person.type_messages(typed, PERSON_POST_INTERVAL_SECONDS)
    # Playwright's sync API holds this thread's event loop: the members run in another.
    with ThreadPoolExecutor(1) as pool:
        resumed = pool.submit(asyncio.run, chat_while(members, fault, typed)).result()
    person.wait_for_message(typed[-1], timeout=RESUME_BOUND_SECONDS)
    person.wait_until_sent(timeout=RESUME_BOUND_SECONDS)

    acknowledged = {message_id for member in members for message_id, _ in member.stored.values()}
    running = next(host for host in LB_HOSTS if container_state(host) == "running")
    stored = stored_messages(testinfra.get_host(f"podman://{running}"), room)
    texts = [message["text"] for message in stored]
    assert len(texts) == len(set(texts)), "a message was stored twice"
    assert [text for text in texts if text in typed] == typed, (
        "what the person typed was not stored, each once, in order"
    )
    ids = {message["id"] for message in stored}
    typed_ids = {message["id"] for message in stored if message["text"] in typed}
    assert ids == acknowledged | typed_ids, "a post was stored unacknowledged, or not stored"
    for member in members:
        missing = ids - member.shown.keys()
        assert not missing, (
            f"{member.name} never saw {len(missing)} stored messages without reloading"
        )
        assert member.shown.keys() == ids, f"{member.name} was shown messages never stored"
    shown = [message["id"] for message in person.messages()]
    assert shown == sorted(ids), "the person's page does not show every message once, in order"
    return resumed


def summary(members: list[Member]) -> str:
    reconnects = sum(len(member.outages) for member in members)
    posts = sum(len(member.stored) for member in members)
    return f"{posts} posts, {reconnects} reconnects"


def outages(members: list[Member], faulted: float) -> str:
    """When each member noticed its connection lost and had the next one: where a
    failover's time goes (the fault's detection, or the reconnect)."""
    return ", ".join(
        f"{member.name} {noticed - faulted:.1f}-{back - faulted:.1f}"
        for member in members
        for noticed, back in member.outages
    )


def members_of_a_new_room(users: list) -> list[Member]:
    room = f"ha{uuid.uuid4().hex[:10]}"
    return [Member(user, room) for user in users]
