"""Losing the Redis master under chat traffic, with Redis Sentinel: chat resumes
on the replica the sentinels promote, and no message is lost or doubled.

All on loopback: a master, its replica, three sentinels (Debian's
redis-sentinel, on ports of their own: the package's own service on 26379 is
neither used nor disturbed), one real Daphne process. The master's host is
frozen (SIGSTOP to the master and to the sentinel beside it, the first one the
app asks: their kernel still accepts and acknowledges, as a paused VM or
container does, and nothing answers) or the master is killed.
"""

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
import uuid

import pytest
import redis

from .conftest import REDIS_SERVER, _free_port
from .daphneutil import environment_for, listening, manage, sign_in, start_daphne, wait_until

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, WebSocketException  # noqa: E402

REDIS_SENTINEL = shutil.which("redis-sentinel")
pytestmark = pytest.mark.skipif(
    REDIS_SENTINEL is None,
    reason="redis-sentinel not found: install Debian's redis-sentinel (make host-packages)",
)

MASTER_NAME = "chat"
# As roles/sentinel sets them (sentinel_down_after_milliseconds, _failover_timeout).
DOWN_AFTER_MILLISECONDS = 5000
FAILOVER_TIMEOUT_MILLISECONDS = 60000
# Under the per-account rate limit (README "Limits and abuse": 10 in 10 s).
POST_INTERVAL_SECONDS = 1.2
TRAFFIC_BEFORE_LOSS_SECONDS = 4
TRAFFIC_AFTER_RESUME_SECONDS = 6
# Generous functional bounds; the measured times are printed.
RESUME_BOUND_SECONDS = 45
ANSWER_BOUND_SECONDS = 30


def _start_redis(tmp_path, name: str, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *args],
        cwd=tmp_path,
        stdout=(tmp_path / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
    )


def _sentinels_agree(ports: list[int]) -> bool:
    """Every sentinel knows the replica and the other sentinels: a failover can elect."""
    for port in ports:
        client = redis.Redis(port=port)
        try:
            if len(client.sentinel_slaves(MASTER_NAME)) != 1:
                return False
            if client.sentinel_master(MASTER_NAME)["num-other-sentinels"] != len(ports) - 1:
                return False
        except redis.ConnectionError:
            return False
        finally:
            client.close()
    return True


@pytest.fixture
def shard(tmp_path):
    """A master, its replica and three sentinels watching them; yields the
    processes of the master's host (the master and the first sentinel) and the
    sentinels' addresses, in the order the app asks them."""
    master_port, replica_port = _free_port(), _free_port()
    sentinel_ports = [_free_port() for _ in range(3)]
    processes = [
        _start_redis(tmp_path, "master", master_port),
        _start_redis(
            tmp_path, "replica", replica_port, "--replicaof", "127.0.0.1", str(master_port)
        ),
    ]
    for port in sentinel_ports:
        config = tmp_path / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MILLISECONDS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MILLISECONDS}\n"
        )
        processes.append(
            subprocess.Popen(
                [REDIS_SENTINEL, str(config)],
                cwd=tmp_path,
                stdout=(tmp_path / f"sentinel-{port}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        wait_until(
            lambda: all(listening(port) for port in (master_port, replica_port, *sentinel_ports)),
            30,
            "Redis and the sentinels listening",
        )
        wait_until(lambda: _sentinels_agree(sentinel_ports), 60, "the sentinels ready to fail over")
        yield processes[0:3:2], ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def site(shard, tmp_path):
    """One Daphne process whose Redis is the sentinel-managed shard; yields its
    port, two accounts' sessions, the environment and the master host's processes."""
    master_host, sentinels = shard
    environment = environment_for(
        tmp_path, f"redis://{MASTER_NAME}/0", CHATSTACK_REDIS_SENTINELS=sentinels
    )
    cookies = sign_in(environment, "alice", "bob")
    port = _free_port()
    daphne = start_daphne(environment, port, tmp_path)
    try:
        yield port, cookies, environment, master_host
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)


class Member:
    """One scripted browser tab, as the page behaves: posts with a cid, sends a
    refused post again a second later, reconnects and sends unacknowledged posts
    again, and records every message it is shown."""

    def __init__(self, name: str, cookie: str, port: int, room: str):
        self.name, self.cookie, self.port, self.room = name, cookie, port, room
        self.socket = None
        # Every message id shown, in order, duplicates included.
        self.shown: list[int] = []
        self.first_shown: dict[int, float] = {}
        # cid -> (text, when first posted); acknowledged ones move to `stored`.
        self.pending: dict[str, tuple[str, float]] = {}
        # cid -> (message id, when first posted)
        self.stored: dict[str, tuple[int, float]] = {}
        # cid -> when the server last answered it (echo or error frame)
        self.answered: dict[str, float] = {}
        # cid -> when it was last sent
        self.sent: dict[str, float] = {}
        # Seconds a post waited for the server's echo or error frame.
        self.waits: list[float] = []
        self.retries: dict[str, float] = {}

    def show(self, frame: dict, from_history: bool = False) -> None:
        if frame["id"] in self.first_shown and from_history:
            return  # A reconnect's history repeats what the page already shows.
        self.shown.append(frame["id"])
        self.first_shown.setdefault(frame["id"], time.monotonic())
        if frame.get("user") == self.name and frame.get("cid") in self.pending:
            self.answer(frame["cid"])
            _, posted = self.pending.pop(frame["cid"])
            self.stored[frame["cid"]] = (frame["id"], posted)

    def answer(self, cid: str) -> None:
        self.waits.append(time.monotonic() - self.sent[cid])

    async def connect(self) -> None:
        deadline = time.monotonic() + RESUME_BOUND_SECONDS
        while True:
            try:
                socket = await connect(
                    f"ws://localhost:{self.port}/ws/chat/{self.room}/",
                    origin="http://localhost",
                    additional_headers={"Cookie": f"sessionid={self.cookie}"},
                    open_timeout=10,
                )
                history = json.loads(await asyncio.wait_for(socket.recv(), 15))
                assert history["type"] == "history", history
                break
            except (OSError, TimeoutError, WebSocketException):
                assert time.monotonic() < deadline, f"{self.name} could not reconnect"
                await asyncio.sleep(0.5)
        for message in history["messages"]:
            self.show(message, from_history=True)
        self.socket = socket
        for cid in list(self.pending):
            await self.send(cid)

    async def send(self, cid: str) -> None:
        self.sent[cid] = time.monotonic()
        # If the socket closed, the reconnect sends it again.
        with contextlib.suppress(ConnectionClosed):
            await self.socket.send(json.dumps({"message": self.pending[cid][0], "cid": cid}))

    async def post(self, text: str) -> None:
        cid = uuid.uuid4().hex
        self.pending[cid] = (text, time.monotonic())
        await self.send(cid)

    async def listen(self, done: asyncio.Event) -> None:
        while not done.is_set():
            for cid in [cid for cid, due in self.retries.items() if due < time.monotonic()]:
                del self.retries[cid]
                if cid in self.pending:
                    await self.send(cid)
            try:
                frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout=0.5))
            except TimeoutError:
                continue
            except ConnectionClosed:
                await self.connect()
                continue
            if frame["type"] == "message":
                self.show(frame)
            elif frame["type"] == "error" and frame.get("cid") in self.pending:
                self.answer(frame["cid"])
                self.retries[frame["cid"]] = time.monotonic() + 1


def resumed_after(members: list[Member], lost: float) -> float | None:
    """Seconds from the loss until the first post made after it was shown to everyone."""
    posts = sorted(
        (posted, message_id)
        for member in members
        for message_id, posted in member.stored.values()
        if posted > lost
    )
    for _, message_id in posts:
        if all(message_id in member.first_shown for member in members):
            return max(member.first_shown[message_id] for member in members) - lost
    return None


async def chat_through(members: list[Member], lose_master) -> float:
    """Members chat while `lose_master` runs; the seconds until chat resumed."""
    for member in members:
        await member.connect()
    done = asyncio.Event()
    listeners = [asyncio.create_task(member.listen(done)) for member in members]
    turn = 0

    async def talk_until(over) -> None:
        nonlocal turn
        while not over():
            for member in members:
                await member.post(f"{member.name} {turn}")
            turn += 1
            await asyncio.sleep(POST_INTERVAL_SECONDS)

    started = time.monotonic()
    await talk_until(lambda: time.monotonic() - started > TRAFFIC_BEFORE_LOSS_SECONDS)
    lost = time.monotonic()
    lose_master()
    resumed = None

    def resumed_a_while_ago() -> bool:
        nonlocal resumed
        resumed = resumed_after(members, lost)
        assert time.monotonic() - lost < RESUME_BOUND_SECONDS, (
            f"chat did not resume within {RESUME_BOUND_SECONDS}s of losing the master:"
            f" unacknowledged posts {[len(member.pending) for member in members]}"
        )
        return resumed is not None and time.monotonic() - lost > resumed + (
            TRAFFIC_AFTER_RESUME_SECONDS
        )

    await talk_until(resumed_a_while_ago)
    # The last posts' echoes (and any refused one, sent again).
    deadline = time.monotonic() + ANSWER_BOUND_SECONDS
    while any(member.pending for member in members):
        assert time.monotonic() < deadline, "posts were never acknowledged after the failover"
        await asyncio.sleep(0.2)
    # The heartbeat's gap fill (chat.latest) brings what the channel layer lost.
    await asyncio.sleep(0)
    done.set()
    await asyncio.gather(*listeners)
    for member in members:
        await member.socket.close()
    return resumed


@pytest.mark.parametrize("loss", ["frozen", "killed"])
async def test_losing_the_master_loses_no_message(site, loss):
    """Otherwise losing the Redis master stops chat for good, or loses, doubles or
    silently swallows messages, although the sentinels promoted its replica."""
    port, cookies, environment, (master, sentinel) = site
    room = f"failover{uuid.uuid4().hex[:8]}"
    members = [Member(name, cookies[name], port, room) for name in ("alice", "bob")]

    def lose_master():
        if loss == "frozen":
            for process in (master, sentinel):
                process.send_signal(signal.SIGSTOP)
        else:
            master.send_signal(signal.SIGKILL)

    resumed = await chat_through(members, lose_master)
    waits = [wait for member in members for wait in member.waits]
    posts = sum(len(member.stored) for member in members)
    print(
        f"Redis master {loss}: chat resumed after {resumed:.1f}s; a post waited at most"
        f" {max(waits):.1f}s for its echo or error ({posts} posts)"
    )

    assert max(waits) < ANSWER_BOUND_SECONDS, "a post went unanswered: the page shows it pending"
    acknowledged = {message_id for member in members for message_id, _ in member.stored.values()}
    stored = json.loads(
        manage(
            environment,
            "shell",
            "-c",
            "import json; from chatstack.chat.models import Message;"
            f" print(json.dumps(list(Message.objects.filter(room={room!r})"
            ".values_list('id', 'text'))))",
        ).splitlines()[-1]
    )
    texts = [text for _, text in stored]
    assert len(texts) == len(set(texts)), "a message was stored twice"
    assert {message_id for message_id, _ in stored} == acknowledged, (
        "a post was stored but its sender never saw it acknowledged"
    )
    for member in members:
        assert set(member.shown) == acknowledged, (
            f"{member.name} missed or was shown other messages"
        )
        assert len(member.shown) == len(set(member.shown)), (
            f"{member.name} was shown a message twice"
        )
