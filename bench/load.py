"""Load generators: what browsers do to a chatstack host, many times at once.

Every generator talks to one base URL on the loopback (a bench container's
published 443), trusts only that container's own certificate, ignores proxy
settings, and stops by itself: each loop is bounded by a count and a deadline.
Worker processes share the machine's CLOCK_MONOTONIC, so a timestamp written
into a message by one process is comparable to the time another receives it.
"""

import asyncio
import contextlib
import http.cookiejar
import json
import multiprocessing
import re
import resource
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
STATIC_LINK = re.compile(r'href="(/static/[^"]+\.css)"')
# Accounts on a throwaway bench host.
PASSWORD = "bench horse battery 9"  # noqa: S105
# Refused upgrades in a row that mean the host holds no more.
CONSECUTIVE_FAILURES = 20
# A sign-up hashes a password (about a second of CPU), so a few users share
# all connections; the app allows one user any number of sockets.
USERS = 4


@dataclass(frozen=True)
class Target:
    """One host as the load generator sees it; picklable for worker processes."""

    base_url: str
    certificate: str
    cookies: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base_url).hostname

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.base_url).port

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.certificate)


def raise_open_files_limit() -> None:
    # Every socket is a file; 10,000 of them exceed the usual soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 2)}


# Accounts ----------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def sign_up(target: Target, username: str) -> str:
    """Signs up as a browser would (CSRF token, form post); returns the Cookie header."""
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        # No proxy from the environment: the host is on this machine.
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=target.tls()),
        urllib.request.HTTPCookieProcessor(cookies),
        _NoRedirect(),
    )
    url = target.base_url + "/accounts/signup/"
    with opener.open(url, timeout=30) as response:
        token = CSRF_INPUT.search(response.read().decode()).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password1": PASSWORD,
            "password2": PASSWORD,
        }
    ).encode()
    # https only: base_url is the bench container's published port.
    request = urllib.request.Request(url, data=form, headers={"Origin": target.base_url})  # noqa: S310
    try:
        opener.open(request, timeout=30)
    except urllib.error.HTTPError as error:
        # The redirect after a successful sign-up arrives as an "error" here.
        if error.code != 302:
            raise RuntimeError(f"sign-up of {username} failed: HTTP {error.code}") from None
    header = "; ".join(f"{cookie.name}={cookie.value}" for cookie in cookies)
    if "sessionid=" not in header:
        raise RuntimeError(f"sign-up of {username} did not log in")
    return header


def with_users(target: Target, prefix: str) -> Target:
    cookies = tuple(sign_up(target, f"{prefix}{index}") for index in range(USERS))
    return Target(target.base_url, target.certificate, cookies)


def static_path(target: Target) -> str:
    """The content-hashed stylesheet the login page links to."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=target.tls())
    )
    with opener.open(target.base_url + "/accounts/login/", timeout=30) as response:
        return STATIC_LINK.search(response.read().decode()).group(1)


# Worker processes --------------------------------------------------------


def run_workers(function, jobs: list[tuple], timeout: float, barrier_parties: int = 0):
    """Starts function(*job, barrier, results) in one process per job.

    Returns collect(), which waits for every worker's result, and the barrier
    of barrier_parties (the workers, plus the caller when it takes part in
    the phases, as capacity() does), if any.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    barrier = context.Barrier(barrier_parties) if barrier_parties else None
    processes = [
        context.Process(target=function, args=(*job, barrier, results), daemon=True) for job in jobs
    ]
    for process in processes:
        process.start()

    def collect() -> list[dict]:
        collected = [results.get(timeout=timeout) for _ in processes]
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        return collected

    return collect, barrier


def _barrier_wait(barrier, timeout: float) -> asyncio.Future:
    return asyncio.to_thread(barrier.wait, timeout)


def split(items: list, parts: int) -> list[list]:
    return [items[index::parts] for index in range(parts)]


# Pages -------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Reads one HTTP/1.1 response; returns its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    return status, headers.get("connection") != "close"


async def _page_connection(target: Target, path: str, cookie: str, deadline: float, stats):
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Cookie: {cookie}\r\nUser-Agent: chatstack-bench\r\n\r\n"
    ).encode()
    tls = target.tls()
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port, ssl=tls), 10
            )
        except (OSError, TimeoutError) as error:
            stats["errors"][type(error).__name__] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            keep_alive = True
            while keep_alive and time.monotonic() < deadline:
                started = time.monotonic()
                writer.write(request)
                status, keep_alive = await asyncio.wait_for(_read_response(reader), 10)
                stats["latencies"].append((time.monotonic() - started) * 1000)
                if status != 200:
                    stats["errors"][f"HTTP {status}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            stats["errors"][type(error).__name__] += 1
        finally:
            writer.close()


def _pages_worker(target, path, cookie, connections, seconds, barrier, results):
    raise_open_files_limit()

    async def main():
        stats = {"latencies": [], "errors": Counter()}
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(_page_connection(target, path, cookie, deadline, stats) for _ in range(connections))
        )
        return stats

    stats = asyncio.run(main())
    results.put({"latencies": stats["latencies"], "errors": dict(stats["errors"])})


def pages(target: Target, path: str, connections: int, seconds: float, workers: int) -> dict:
    """Keep-alive GETs of one path from `connections` connections per worker for `seconds`."""
    jobs = [(target, path, target.cookies[0], connections, seconds)] * workers
    collect, _ = run_workers(_pages_worker, jobs, timeout=seconds + 60)
    outcome = collect()
    latencies = [value for result in outcome for value in result["latencies"]]
    errors = Counter()
    for result in outcome:
        errors.update(result["errors"])
    return {
        "path": path,
        "connections": connections * workers,
        "seconds": seconds,
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": percentiles(latencies),
        "errors": dict(errors),
    }


# WebSockets --------------------------------------------------------------


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


def _is_open(socket: Socket) -> bool:
    return socket.reader is not None and not socket.reader.done()


# Fan-out -----------------------------------------------------------------


@dataclass(frozen=True)
class FanoutShape:
    rooms: int
    members: int
    senders: int
    seconds: float


def _fanout_worker(target, shape, rooms, rate, label, barrier, results):
    raise_open_files_limit()
    results.put(asyncio.run(_fanout(target, shape, rooms, rate, label, barrier)))


async def _fanout(
    target: Target, shape: FanoutShape, rooms: list[int], rate: float, label, barrier
):
    latencies: list[float] = []
    window = [0, 0]
    counts = Counter()
    room_members: Counter = Counter()

    def on_frame(socket: Socket, raw: str) -> None:
        frame = json.loads(raw)
        if frame["type"] == "error":
            counts["error_frames"] += 1
            return
        if frame["type"] != "message" or not frame["message"].startswith("bench "):
            return
        _, sender, seq, sent_ns = frame["message"].split()
        now = time.monotonic_ns()
        if window[0] <= int(sent_ns) < window[1]:
            latencies.append((now - int(sent_ns)) / 1e6)
        echo = socket.echo
        if int(sender) == socket.index and int(seq) == socket.echo_seq and echo and not echo.done():
            echo.set_result(None)

    sockets = [
        Socket(
            index=room * shape.members + member,
            room=f"{label}-{room}",
            cookie=target.cookies[(room * shape.members + member) % len(target.cookies)],
        )
        for room in rooms
        for member in range(shape.members)
    ]
    opened, failures, _ = await open_paced(
        target,
        sockets,
        rate=rate,
        concurrency=32,
        deadline=time.monotonic() + 120,
        on_frame=on_frame,
    )
    for socket in opened:
        room_members[socket.room] += 1
    await wait_quiet(opened, quiet=1.0, limit=30)
    await _barrier_wait(barrier, 300)

    senders = [socket for socket in opened if socket.index % shape.members < shape.senders]
    start = time.monotonic_ns()
    window[:] = [start, start + int(shape.seconds * 1e9)]

    async def send_loop(socket: Socket) -> None:
        loop = asyncio.get_running_loop()
        while time.monotonic_ns() < window[1] and _is_open(socket):
            socket.echo_seq += 1
            socket.echo = loop.create_future()
            sent_ns = time.monotonic_ns()
            try:
                await socket.ws.send(
                    json.dumps({"message": f"bench {socket.index} {socket.echo_seq} {sent_ns}"})
                )
                counts["sent"] += 1
                counts["expected"] += room_members[socket.room]
                # Closed loop: the next message goes once this one came back.
                await asyncio.wait_for(socket.echo, timeout=5)
            except TimeoutError:
                counts["lost_echoes"] += 1
            except ConnectionClosed:
                counts["sender_closed"] += 1
                return

    await asyncio.gather(*(send_loop(socket) for socket in senders))
    # Other members may still be receiving the last messages.
    await asyncio.sleep(1)
    result = {
        "connected": len(opened),
        "connect_failures": dict(failures),
        "still_open": sum(_is_open(socket) for socket in opened),
        "latencies": latencies,
        **counts,
    }
    await close_all(opened, seconds=15)
    return result


def fanout(target: Target, shape: FanoutShape, label: str, rate: float, workers: int) -> dict:
    """R rooms x C members, S closed-loop senders per room, for `seconds`."""
    workers = max(1, min(workers, shape.rooms))
    jobs = [
        (target, shape, rooms, rate / workers, label)
        for rooms in split(list(range(shape.rooms)), workers)
    ]
    collect, _ = run_workers(
        _fanout_worker, jobs, timeout=shape.seconds + 300, barrier_parties=workers
    )
    outcome = collect()
    latencies = [value for result in outcome for value in result.pop("latencies")]
    totals = Counter()
    failures = Counter()
    for result in outcome:
        failures.update(result.pop("connect_failures"))
        totals.update(result)
    delivered = len(latencies)
    return {
        "rooms": shape.rooms,
        "members": shape.members,
        "senders": shape.senders,
        "seconds": shape.seconds,
        "connections": shape.rooms * shape.members,
        "connected": totals["connected"],
        "connect_failures": dict(failures),
        "sent": totals["sent"],
        "delivered": delivered,
        "delivered_per_second": round(delivered / shape.seconds, 1),
        # Deliveries of the messages sent, over the members in the room at sending time.
        "delivery_ratio": round(delivered / totals["expected"], 4) if totals["expected"] else None,
        "latency_ms": percentiles(latencies),
        "lost_echoes": totals["lost_echoes"],
        "error_frames": totals["error_frames"],
        "closed_by_server": totals["connected"] - totals["still_open"],
    }


# Capacity ----------------------------------------------------------------


@dataclass(frozen=True)
class CapacityPlan:
    connections: int
    room_size: int
    # Upgrades per second and handshakes in flight, over all workers: the
    # second slows the ramp down to what the host can take.
    rate: float
    in_flight: int
    ramp_seconds: float
    # Broadcast messages per second, over all workers.
    broadcast_rate: float


def _capacity_worker(target, plan, indices, label, workers, barrier, results):
    raise_open_files_limit()
    results.put(asyncio.run(_capacity(target, plan, indices, label, workers, barrier)))


async def _capacity(target: Target, plan: CapacityPlan, indices, label, workers, barrier):
    latencies: list[float] = []
    reached: set[int] = set()

    def on_frame(socket: Socket, raw: str) -> None:
        frame = json.loads(raw)
        text = frame.get("message", "")
        if (
            frame["type"] == "message"
            and text.startswith("broadcast ")
            and socket.index not in reached
        ):
            reached.add(socket.index)
            latencies.append((time.monotonic_ns() - int(text.split()[1])) / 1e6)

    sockets = [
        Socket(
            index=index,
            room=f"{label}-{index // plan.room_size}",
            cookie=target.cookies[index % len(target.cookies)],
        )
        for index in indices
    ]
    started = time.monotonic()
    opened, failures, attempted = await open_paced(
        target,
        sockets,
        rate=plan.rate / workers,
        concurrency=max(1, plan.in_flight // workers),
        deadline=started + plan.ramp_seconds,
        on_frame=on_frame,
    )
    ramp = time.monotonic() - started
    await wait_quiet(opened, quiet=2.0, limit=60)
    # The controller measures memory between these two.
    await _barrier_wait(barrier, 600)
    await _barrier_wait(barrier, 600)

    held = [socket for socket in opened if _is_open(socket)]
    # One message per room, from the first member held; each room belongs to
    # one worker (see capacity()).
    first_in_room: dict[str, Socket] = {}
    for socket in held:
        first_in_room.setdefault(socket.room, socket)
    for socket in first_in_room.values():
        with contextlib.suppress(ConnectionClosed):
            await socket.ws.send(json.dumps({"message": f"broadcast {time.monotonic_ns()}"}))
        # Paced: a burst of rooms measures the database's write queue, not delivery.
        await asyncio.sleep(workers / plan.broadcast_rate)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(reached) < len(held):
        await asyncio.sleep(0.1)
    result = {
        "attempted": attempted,
        "opened": len(opened),
        "held": len(held),
        "connect_failures": dict(failures),
        "ramp_seconds": round(ramp, 1),
        "broadcast_rooms": len(first_in_room),
        "reached": len(reached & {socket.index for socket in held}),
        "latencies": latencies,
    }
    await close_all(opened, seconds=30)
    return result


def capacity(target: Target, plan: CapacityPlan, label: str, workers: int, measure_memory) -> dict:
    """Opens up to plan.connections WebSockets, holds them, sends one message in every room.

    measure_memory() returns KiB by component; it is called before the ramp
    and while every socket is held.
    """
    rooms = list(range(-(-plan.connections // plan.room_size)))
    jobs = [
        (
            target,
            plan,
            [
                index
                for room in worker_rooms
                for index in range(room * plan.room_size, (room + 1) * plan.room_size)
                if index < plan.connections
            ],
            label,
            workers,
        )
        for worker_rooms in split(rooms, workers)
    ]
    before = measure_memory()
    collect, barrier = run_workers(
        _capacity_worker, jobs, timeout=plan.ramp_seconds + 400, barrier_parties=workers + 1
    )
    barrier.wait(timeout=plan.ramp_seconds + 200)
    during = measure_memory()
    barrier.wait(timeout=60)
    outcome = collect()
    held = sum(result["held"] for result in outcome)
    reached = sum(result["reached"] for result in outcome)
    failures = Counter()
    for result in outcome:
        failures.update(result["connect_failures"])
    latencies = [value for result in outcome for value in result["latencies"]]
    return {
        "target": plan.connections,
        "room_size": plan.room_size,
        "attempted": sum(result["attempted"] for result in outcome),
        "opened": sum(result["opened"] for result in outcome),
        "held": held,
        "connect_failures": dict(failures),
        "ramp_seconds": max(result["ramp_seconds"] for result in outcome),
        "memory_before_kib": before,
        "memory_held_kib": during,
        "memory_per_connection_kib": {
            name: round((during[name] - before[name]) / held, 1) if held else None
            for name in before
        },
        "broadcast_rooms": sum(result["broadcast_rooms"] for result in outcome),
        "broadcast_reached": reached,
        "broadcast_reached_all": held > 0 and reached == held,
        "broadcast_latency_ms": percentiles(latencies),
    }
