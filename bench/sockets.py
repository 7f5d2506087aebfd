"""WebSocket clients: browser tabs in chat rooms, opened at a pace, read, closed.

The plumbing fanout.py, openloop.py and capacity.py share; each hands its own
on_frame callback to open_paced() to see every frame its sockets receive.
"""

import asyncio
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass

from load import Target
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

# Refused upgrades in a row that mean the host holds no more.
CONSECUTIVE_FAILURES = 20


@dataclass
class Socket:
    """One browser tab in a room."""

    index: int
    room: str
    cookie: str
    ws: ClientConnection | None = None
    reader: asyncio.Task | None = None
    frames: int = 0
    echo: asyncio.Future | None = None
    echo_seq: int = 0


def room_sockets(target: Target, rooms: list[int], members: int, label: str) -> list[Socket]:
    """`members` sockets in each of `rooms`, named `label`-<room>; indices count across rooms."""
    return [
        Socket(
            index=room * members + member,
            room=f"{label}-{room}",
            cookie=target.cookie_for(room * members + member),
        )
        for room in rooms
        for member in range(members)
    ]


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, InvalidStatus):
        return f"HTTP {error.response.status_code}"
    return type(error).__name__


async def _open(target: Target, tls: ssl.SSLContext, socket: Socket, timeout: float) -> None:
    url = target.base_url.replace("https://", "wss://") + f"/ws/chat/{socket.room}/"
    socket.ws = await connect(
        url,
        ssl=tls,
        origin=target.base_url,
        additional_headers={"Cookie": socket.cookie},
        user_agent_header="chatstack-bench",
        proxy=None,
        # Daphne does not negotiate compression; offering it only costs memory here.
        compression=None,
        # Daphne pings; the client answers, and does not add pings of its own.
        ping_interval=None,
        open_timeout=timeout,
        close_timeout=2,
    )
    # The consumer accepts, then sends the room's history: from then on it
    # is subscribed to the room.
    try:
        async with asyncio.timeout(timeout):
            while json.loads(await socket.ws.recv())["type"] != "history":
                pass
    except BaseException:
        await socket.ws.close()
        raise


def probe_websocket(target: Target) -> None:
    """Opens and closes one WebSocket: Daphne answers and the session is accepted."""

    async def probe() -> None:
        socket = Socket(index=0, room="bench-probe", cookie=target.cookies[0])
        await _open(target, target.tls(), socket, timeout=10)
        await socket.ws.close()

    try:
        asyncio.run(probe())
    except WebSocketException as error:
        raise RuntimeError(f"WebSocket probe failed: {error}") from error


async def open_paced(
    target: Target,
    sockets: list[Socket],
    rate: float,
    concurrency: int,
    deadline: float,
    on_frame,
) -> tuple[list[Socket], Counter, int]:
    """Opens sockets at `rate` per second with at most `concurrency` handshakes in flight.

    A failed handshake pauses new ones for a second, as a browser backs off
    before reconnecting. Stops at the deadline, or when the host has refused
    CONSECUTIVE_FAILURES handshakes in a row: it is full. Each opened socket
    gets a reader task that hands every frame to on_frame(socket, raw).
    Returns the opened sockets, the failures by kind and how many were tried.
    """
    tls = target.tls()
    gate = asyncio.Semaphore(concurrency)
    failures: Counter = Counter()
    opened: list[Socket] = []
    pending: set[asyncio.Task] = set()
    state = {"in_a_row": 0, "resume_at": 0.0}

    async def one(socket: Socket) -> None:
        try:
            await _open(target, tls, socket, timeout=10)
        except Exception as error:
            # Refused, reset, timed out or a broken handshake: counted by kind.
            failures[_failure_kind(error)] += 1
            state["in_a_row"] += 1
            state["resume_at"] = time.monotonic() + 1
        else:
            state["in_a_row"] = 0
            socket.reader = asyncio.create_task(_read(socket, on_frame))
            opened.append(socket)
        finally:
            gate.release()

    attempted = 0
    next_start = time.monotonic()
    for socket in sockets:
        await gate.acquire()
        now = time.monotonic()
        if now >= deadline or state["in_a_row"] >= CONSECUTIVE_FAILURES:
            gate.release()
            break
        await asyncio.sleep(max(0.0, next_start - now, state["resume_at"] - now))
        next_start = max(next_start, time.monotonic() - 1) + 1 / rate
        attempted += 1
        task = asyncio.create_task(one(socket))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        # Each handshake times out after 10 s on its own; this only bounds the sum.
        _, late = await asyncio.wait(pending, timeout=30)
        for task in late:
            task.cancel()
    return opened, failures, attempted


async def _read(socket: Socket, on_frame) -> None:
    try:
        async for raw in socket.ws:
            socket.frames += 1
            on_frame(socket, raw)
    except ConnectionClosed:
        pass


async def close_all(sockets: list[Socket], seconds: float) -> None:
    """Closes politely for up to `seconds`; the worker's exit drops the rest."""
    live = [socket for socket in sockets if socket.ws is not None]
    try:
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(socket.ws.close() for socket in live), return_exceptions=True)
    except TimeoutError:
        pass
    for socket in live:
        if socket.reader is not None:
            socket.reader.cancel()


async def wait_quiet(sockets: list[Socket], quiet: float, limit: float) -> None:
    """Waits until no frame came for `quiet` seconds (joins announce presence), at most `limit`."""
    deadline = time.monotonic() + limit
    last = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        total = sum(socket.frames for socket in sockets)
        if total != last:
            last, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return
        await asyncio.sleep(0.1)


def is_open(socket: Socket) -> bool:
    return socket.reader is not None and not socket.reader.done()
