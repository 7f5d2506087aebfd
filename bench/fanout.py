"""Fan-out: rooms of WebSockets where a few members send in a closed loop and all receive."""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from load import Target, barrier_wait, counted, percentiles, pooled, run_workers, split
from sockets import Socket, close_all, is_open, open_paced, room_sockets, wait_quiet
from websockets.exceptions import ConnectionClosed


@dataclass(frozen=True)
class FanoutShape:
    rooms: int
    members: int
    senders: int
    seconds: float


@dataclass
class _Deliveries:
    """What one worker's members receive of the messages sent in the window."""

    # Send times (monotonic ns) from, up to: messages sent before the window
    # (none) or after it (the last echoes) are not samples.
    window: tuple[int, int] = (0, 0)
    latencies: list[float] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def on_frame(self, socket: Socket, raw: str) -> None:
        frame = json.loads(raw)
        if frame["type"] == "error":
            self.counts["error_frames"] += 1
            return
        if frame["type"] != "message" or not frame["message"].startswith("bench "):
            return
        _, sender, seq, sent_ns = frame["message"].split()
        now = time.monotonic_ns()
        if self.window[0] <= int(sent_ns) < self.window[1]:
            self.latencies.append((now - int(sent_ns)) / 1e6)
        echo = socket.echo
        if int(sender) == socket.index and int(seq) == socket.echo_seq and echo and not echo.done():
            echo.set_result(None)


async def _send_loop(socket: Socket, members: int, deliveries: _Deliveries) -> None:
    """Sends until the window ends; `members` in the socket's room should receive each."""
    loop = asyncio.get_running_loop()
    counts = deliveries.counts
    while time.monotonic_ns() < deliveries.window[1] and is_open(socket):
        socket.echo_seq += 1
        socket.echo = loop.create_future()
        sent_ns = time.monotonic_ns()
        try:
            await socket.ws.send(
                json.dumps({"message": f"bench {socket.index} {socket.echo_seq} {sent_ns}"})
            )
            counts["sent"] += 1
            counts["expected"] += members
            # Closed loop: the next message goes once this one came back.
            await asyncio.wait_for(socket.echo, timeout=5)
        except TimeoutError:
            counts["lost_echoes"] += 1
        except ConnectionClosed:
            counts["sender_closed"] += 1
            return


async def _fanout(
    target: Target, shape: FanoutShape, rooms: list[int], rate: float, label, barrier
):
    deliveries = _Deliveries()
    opened, failures, _ = await open_paced(
        target,
        room_sockets(target, rooms, shape.members, label),
        rate=rate,
        concurrency=32,
        deadline=time.monotonic() + 120,
        on_frame=deliveries.on_frame,
    )
    room_members = Counter(socket.room for socket in opened)
    await wait_quiet(opened, quiet=1.0, limit=30)
    await barrier_wait(barrier, 300)

    senders = [socket for socket in opened if socket.index % shape.members < shape.senders]
    start = time.monotonic_ns()
    deliveries.window = (start, start + int(shape.seconds * 1e9))
    await asyncio.gather(
        *(_send_loop(socket, room_members[socket.room], deliveries) for socket in senders)
    )
    # Other members may still be receiving the last messages.
    await asyncio.sleep(1)
    result = {
        "connect_failures": dict(failures),
        "latencies": deliveries.latencies,
        "counts": {
            "connected": len(opened),
            "still_open": sum(is_open(socket) for socket in opened),
            **deliveries.counts,
        },
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
    collect, _ = run_workers(_fanout, jobs, timeout=shape.seconds + 300, barrier_parties=workers)
    outcome = collect()
    latencies = pooled(outcome, "latencies")
    totals = counted(outcome, "counts")
    delivered = len(latencies)
    return {
        "rooms": shape.rooms,
        "members": shape.members,
        "senders": shape.senders,
        "seconds": shape.seconds,
        "connections": shape.rooms * shape.members,
        "connected": totals["connected"],
        "connect_failures": dict(counted(outcome, "connect_failures")),
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
