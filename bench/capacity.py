"""Capacity: as many WebSockets as the host holds, then one message in every room."""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

from load import Target, barrier_wait, counted, percentiles, pooled, run_workers, split
from sockets import Socket, close_all, is_open, open_paced, wait_quiet
from websockets.exceptions import ConnectionClosed


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


@dataclass
class _Broadcast:
    """Which sockets received their room's broadcast, and how late (the first time)."""

    reached: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)

    def on_frame(self, socket: Socket, raw: str) -> None:
        frame = json.loads(raw)
        text = frame.get("message", "")
        if (
            frame["type"] == "message"
            and text.startswith("broadcast ")
            and socket.index not in self.reached
        ):
            self.reached.add(socket.index)
            self.latencies.append((time.monotonic_ns() - int(text.split()[1])) / 1e6)


async def _send_broadcasts(held: list[Socket], plan: CapacityPlan, workers: int) -> int:
    """One message per room, from the first member held; returns how many rooms.

    Each room belongs to one worker (see capacity()).
    """
    first_in_room: dict[str, Socket] = {}
    for socket in held:
        first_in_room.setdefault(socket.room, socket)
    for socket in first_in_room.values():
        with contextlib.suppress(ConnectionClosed):
            await socket.ws.send(json.dumps({"message": f"broadcast {time.monotonic_ns()}"}))
        # Paced: a burst of rooms measures the database's write queue, not delivery.
        await asyncio.sleep(workers / plan.broadcast_rate)
    return len(first_in_room)


async def _capacity(target: Target, plan: CapacityPlan, indices, label, workers, barrier):
    broadcast = _Broadcast()
    sockets = [
        Socket(
            index=index,
            room=f"{label}-{index // plan.room_size}",
            cookie=target.cookie_for(index),
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
        on_frame=broadcast.on_frame,
    )
    ramp = time.monotonic() - started
    await wait_quiet(opened, quiet=2.0, limit=60)
    # The controller measures memory between these two.
    await barrier_wait(barrier, 600)
    await barrier_wait(barrier, 600)

    held = [socket for socket in opened if is_open(socket)]
    rooms = await _send_broadcasts(held, plan, workers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(broadcast.reached) < len(held):
        await asyncio.sleep(0.1)
    result = {
        "connect_failures": dict(failures),
        "ramp_seconds": round(ramp, 1),
        "latencies": broadcast.latencies,
        "counts": {
            "attempted": attempted,
            "opened": len(opened),
            "held": len(held),
            "broadcast_rooms": rooms,
            "reached": len(broadcast.reached & {socket.index for socket in held}),
        },
    }
    await close_all(opened, seconds=30)
    return result


def _worker_indices(plan: CapacityPlan, workers: int) -> list[list[int]]:
    """The connections of each worker, whole rooms each."""
    rooms = list(range(-(-plan.connections // plan.room_size)))
    return [
        [
            index
            for room in worker_rooms
            for index in range(room * plan.room_size, (room + 1) * plan.room_size)
            if index < plan.connections
        ]
        for worker_rooms in split(rooms, workers)
    ]


def capacity(target: Target, plan: CapacityPlan, label: str, workers: int, measure_memory) -> dict:
    """Opens up to plan.connections WebSockets, holds them, sends one message in every room.

    measure_memory() returns KiB by component; it is called before the ramp
    and while every socket is held.
    """
    jobs = [(target, plan, indices, label, workers) for indices in _worker_indices(plan, workers)]
    before = measure_memory()
    collect, barrier = run_workers(
        _capacity, jobs, timeout=plan.ramp_seconds + 400, barrier_parties=workers + 1
    )
    barrier.wait(timeout=plan.ramp_seconds + 200)
    during = measure_memory()
    barrier.wait(timeout=60)
    outcome = collect()
    totals = counted(outcome, "counts")
    held, reached = totals["held"], totals["reached"]
    return {
        "target": plan.connections,
        "room_size": plan.room_size,
        "attempted": totals["attempted"],
        "opened": totals["opened"],
        "held": held,
        "connect_failures": dict(counted(outcome, "connect_failures")),
        "ramp_seconds": max(result["ramp_seconds"] for result in outcome),
        "memory_before_kib": before,
        "memory_held_kib": during,
        "memory_per_connection_kib": {
            name: round((during[name] - before[name]) / held, 1) if held else None
            for name in before
        },
        "broadcast_rooms": totals["broadcast_rooms"],
        "broadcast_reached": reached,
        "broadcast_reached_all": held > 0 and reached == held,
        "broadcast_latency_ms": percentiles(pooled(outcome, "latencies")),
    }
