"""Open loop: people in rooms post at a fixed rate, whatever the server answers, stepped up.

A closed-loop sender waits for its message to come back, so it slows down
with the server and can never overload it. Here every person posts on a
schedule computed from the step's start (one message every 1/rate seconds
from a random phase), so a server that cannot keep up falls behind and shows
it. Each message carries its scheduled send time: a send the server delays
(a full socket buffer) counts against the server, and the generator's own
lateness is reported apart (send_lag_ms) to tell the two apart. Each also
carries a cid, as the page's posts do, so that a refusal names the post it
refuses: a refused post is answered, not lost, and its deliveries are not
expected; a post neither echoed to its sender nor refused is unanswered.

Right after the last (highest) step's sends, everyone goes on at the first
step's rate for RECOVERY_SECONDS and a step's seconds more: the recovery,
whose latency counts posts from RECOVERY_SECONDS on, tells whether an
overloaded host is back on time once the load drops.
"""

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from hosts import cpu_seconds_between
from load import Target, barrier_wait, counted, percentiles, pooled, run_workers, split
from sockets import Socket, close_all, is_open, open_paced, room_sockets, wait_quiet
from websockets.exceptions import ConnectionClosed

# A delivery later than this after the step's last send is undelivered.
DRAIN_SECONDS = 5
# How long an overloaded server may take to deliver the rest (late) before
# the next step: a step that starts on an earlier step's backlog measures that.
SETTLE_SECONDS = 90
# Scheduled sends start this long after the step's barrier, so that every
# person's task is waiting when the first falls due.
LEAD_NS = 200_000_000
# The latency target capacity is measured against.
TARGET_P99_MS = 100
# Issue 18's bounds at four times the capacity at target: what is delivered
# is at most this late, and after the load drops the target holds again
# for posts from RECOVERY_SECONDS on.
OVERLOAD_FACTOR = 4
OVERLOAD_P99_MS = 1000
RECOVERY_SECONDS = 5


@dataclass(frozen=True)
class OpenloopShape:
    people: int
    room_size: int
    # Messages per second per person, one step each.
    rates: tuple[float, ...]
    seconds: float


@dataclass
class _Step:
    """One step as one worker sees it: its sends and their deliveries."""

    start: int
    end: int
    # Deliveries of posts scheduled before this count, but not in latency or delivered/s
    # (the window from here to `end` is a step's seconds long).
    measured_from: int = 0
    counts: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    # cid -> the room's members when it was posted: the deliveries a refusal cancels.
    members: dict[str, int] = field(default_factory=dict)

    @property
    def deadline(self) -> int:
        """Deliveries later than this are late."""
        return self.end + DRAIN_SECONDS * 1_000_000_000

    def result(self) -> dict:
        return {
            "counts": self.counts,
            "latencies": self.latencies,
            "send_lags": self.send_lags,
            "errors": self.errors,
        }


@dataclass
class _Steps:
    steps: list[_Step] = field(default_factory=list)

    def on_frame(self, socket: Socket, raw: str) -> None:
        frame = json.loads(raw)
        if frame["type"] == "error":
            self._on_refusal(frame)
            return
        if frame["type"] != "message" or not frame["message"].startswith("open "):
            return
        now = time.monotonic_ns()
        _, step, sender, scheduled_ns = frame["message"].split()
        step = self.steps[int(step)]
        if int(sender) == socket.index:
            step.counts["echoed"] += 1
        if now > step.deadline:
            step.counts["late"] += 1
            return
        step.counts["delivered"] += 1
        if int(scheduled_ns) < step.measured_from:
            return
        step.latencies.append((now - int(scheduled_ns)) / 1e6)
        if now <= step.end:
            step.counts["delivered_in_window"] += 1

    def _on_refusal(self, frame: dict) -> None:
        """Counts a refused post (busy, rate limited, too long) by its text, in the
        step that posted it; an error naming no post, in the step running."""
        cid = frame.get("cid")
        if cid is None:
            if self.steps:
                self.steps[-1].errors[frame.get("error", "")] += 1
            return
        step = self.steps[int(cid.split(".")[0])]
        step.errors[frame.get("error", "")] += 1
        step.counts["refused_posts"] += 1
        step.counts["refused_deliveries"] += step.members.pop(cid, 0)


async def _sleep_until(ns: int) -> None:
    await asyncio.sleep(max(0.0, (ns - time.monotonic_ns()) / 1e9))


async def _person(socket: Socket, index: int, rate: float, members: int, step: _Step) -> None:
    """Posts every 1/rate seconds from a random phase until the step's window ends."""
    interval = int(1e9 / rate)
    scheduled = step.start + random.randrange(interval)  # noqa: S311 (a phase, not a secret)
    while scheduled < step.end and is_open(socket):
        await _sleep_until(scheduled)
        step.send_lags.append((time.monotonic_ns() - scheduled) / 1e6)
        cid = f"{index}.{socket.index}.{scheduled}"
        step.members[cid] = members
        try:
            await socket.ws.send(
                json.dumps({"message": f"open {index} {socket.index} {scheduled}", "cid": cid})
            )
        except ConnectionClosed:
            step.counts["sender_closed"] += 1
            return
        step.counts["sent"] += 1
        step.counts["expected"] += members
        scheduled += interval


async def _post_at(rate: float, index: int, opened: list[Socket], step: _Step, steps: _Steps):
    """Everyone still connected posts at `rate` through the step's window, as step `index`."""
    steps.steps.append(step)
    people = [socket for socket in opened if is_open(socket)]
    # Every member of the room receives a message, its sender too.
    members = Counter(socket.room for socket in people)
    step.counts["people"] = len(people)
    await asyncio.gather(
        *(_person(socket, index, rate, members[socket.room], step) for socket in people)
    )


async def _openloop(
    target: Target, shape: OpenloopShape, rooms: list[int], label, workers, barrier
):
    steps = _Steps()
    opened, failures, _ = await open_paced(
        target,
        room_sockets(target, rooms, shape.room_size, label),
        rate=100 / workers,
        concurrency=max(1, 32 // workers),
        deadline=time.monotonic() + 120,
        on_frame=steps.on_frame,
    )
    await wait_quiet(opened, quiet=1.0, limit=30)
    for index, rate in enumerate(shape.rates):
        # The controller reads the server's CPU time between these two.
        await barrier_wait(barrier, 600)
        await barrier_wait(barrier, 60)
        start = time.monotonic_ns() + LEAD_NS
        step = _Step(start, start + int(shape.seconds * 1e9))
        await _post_at(rate, index, opened, step, steps)
        if index == len(shape.rates) - 1:
            recovered = step.end + RECOVERY_SECONDS * 1_000_000_000
            step = _Step(step.end, recovered + int(shape.seconds * 1e9), measured_from=recovered)
            await _post_at(shape.rates[0], index + 1, opened, step, steps)
        await _sleep_until(step.deadline)
        await wait_quiet(opened, quiet=1.0, limit=SETTLE_SECONDS)
    await barrier_wait(barrier, 600)
    await barrier_wait(barrier, 60)
    result = {
        "connected": len(opened),
        "connect_failures": dict(failures),
        "steps": [step.result() for step in steps.steps],
    }
    await close_all(opened, seconds=15)
    return result


def _step_result(
    shape: OpenloopShape, rate: float, outcome: list[dict], cpu_seconds: dict, also_served: int = 0
) -> dict:
    totals = counted(outcome, "counts")
    delivered = totals["delivered"]
    # The CPU readings span the late deliveries too (and the last step's, the recovery's).
    served = delivered + totals["late"] + also_served
    return {
        "rate_per_person": rate,
        "people": totals["people"],
        # Every member of a room receives each message, its sender too: C per message.
        "offered_per_second": round(shape.people * rate * shape.room_size, 1),
        "sent": totals["sent"],
        "expected": totals["expected"],
        "delivered": delivered,
        "delivered_per_second": round(totals["delivered_in_window"] / shape.seconds, 1),
        # Deliveries of posts the server accepted that did not come in time.
        "undelivered": totals["expected"] - totals["refused_deliveries"] - delivered,
        "late": totals["late"],
        "sender_closed": totals["sender_closed"],
        "refused": dict(counted(outcome, "errors")),
        "refused_posts": totals["refused_posts"],
        # Posts whose sender heard nothing back: neither its echo nor a refusal.
        "unanswered": totals["sent"] - totals["echoed"] - totals["refused_posts"],
        "latency_ms": percentiles(pooled(outcome, "latencies")),
        "send_lag_ms": percentiles(pooled(outcome, "send_lags")),
        "cpu_seconds": {group: round(value, 2) for group, value in cpu_seconds.items()},
        "cpu_us_per_delivery": {
            group: round(value * 1e6 / served, 1) if served else None
            for group, value in cpu_seconds.items()
        },
    }


def meets_target(step: dict) -> bool:
    p99 = step["latency_ms"]["p99"]
    return p99 is not None and p99 <= TARGET_P99_MS and step["undelivered"] == 0


def openloop(target: Target, shape: OpenloopShape, label: str, workers: int, read_cpu) -> dict:
    """Steps the per-person rate up over the same sockets, in rooms each held by one worker.

    read_cpu() reads the server's CPU time (hosts.cpu_ticks); it is called
    before the first step and after each step, once the server is quiet.
    """
    rooms = -(-shape.people // shape.room_size)
    workers = max(1, min(workers, rooms))
    jobs = [
        (target, shape, worker_rooms, label, workers)
        for worker_rooms in split(list(range(rooms)), workers)
    ]
    # The last step's includes the recovery.
    per_step = 2 * shape.seconds + RECOVERY_SECONDS + DRAIN_SECONDS + SETTLE_SECONDS + 5
    collect, barrier = run_workers(
        _openloop,
        jobs,
        timeout=len(shape.rates) * per_step + 300,
        barrier_parties=workers + 1,
    )
    spent = []
    barrier.wait(timeout=300)
    before = read_cpu()
    barrier.wait(timeout=60)
    for _ in shape.rates:
        barrier.wait(timeout=per_step + 60)
        after = read_cpu()
        barrier.wait(timeout=60)
        spent.append(cpu_seconds_between(before, after))
        before = after
    outcome = collect()
    recovery = _step_result(shape, shape.rates[0], [result["steps"][-1] for result in outcome], {})
    last = len(shape.rates) - 1
    steps = [
        _step_result(
            shape,
            rate,
            [result["steps"][index] for result in outcome],
            spent[index],
            also_served=recovery["delivered"] + recovery["late"] if index == last else 0,
        )
        for index, rate in enumerate(shape.rates)
    ]
    held = [step for step in steps if meets_target(step)]
    saturation = max(steps, key=lambda step: step["delivered_per_second"])
    capacity = held[-1]["offered_per_second"] if held else 0
    overload = OVERLOAD_FACTOR * capacity
    overloaded = [step for step in steps if capacity and step["offered_per_second"] >= overload]
    return {
        "people": shape.people,
        "room_size": shape.room_size,
        "seconds_per_step": shape.seconds,
        "connected": sum(result["connected"] for result in outcome),
        "connect_failures": dict(counted(outcome, "connect_failures")),
        "steps": steps,
        # 0: not even the lowest step met the target.
        "capacity_at_target": capacity,
        "capacity_at_target_rate": held[-1]["rate_per_person"] if held else None,
        "saturation_delivered_per_second": saturation["delivered_per_second"],
        "saturation_cpu_us_per_delivery": saturation["cpu_us_per_delivery"],
        # The first step offering OVERLOAD_FACTOR x the capacity at target; None: none did.
        "overload": overloaded[0] if overloaded else None,
        "recovery": recovery,
    }


def overload_bounds_held(run: dict) -> bool:
    """Issue 18's overload target: at OVERLOAD_FACTOR x capacity, what is delivered is at
    most OVERLOAD_P99_MS late, every post is answered, nothing accepted goes undelivered,
    and after the load drops the latency target holds from RECOVERY_SECONDS on."""
    overload, recovery = run["overload"], run["recovery"]
    p99 = overload["latency_ms"]["p99"]
    return (
        p99 is not None
        and p99 <= OVERLOAD_P99_MS
        and overload["unanswered"] == 0
        and overload["undelivered"] == 0
        and meets_target(recovery)
    )
