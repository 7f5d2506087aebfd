"""The benchmark's report: tuned against seed, row by row, and the targets reached."""

from openloop import OVERLOAD_FACTOR, RECOVERY_SECONDS, overload_bounds_held


def ratio(tuned, seed) -> str:
    if not isinstance(tuned, int | float) or not isinstance(seed, int | float) or not seed:
        return ""
    return f"{tuned / seed:.2f}x"


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pick(result: dict, path: tuple):
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def _paths(tuned: dict) -> list[tuple]:
    """(label, path into a profile's results) of every row there can be."""
    paths = []
    for run, label in (("fresh", "fresh host"), ("again", "no changes")):
        paths += [
            (f"converge, {label}: seconds", ("converge", run, "seconds")),
            (f"converge, {label}: changed tasks", ("converge", run, "changed")),
        ]
    for key in tuned.get("pages", {}):
        paths += [
            (f"pages {key}: req/s", ("pages", key, "requests_per_second")),
            (f"pages {key}: p99 ms", ("pages", key, "latency_ms", "p99")),
        ]
    for key in tuned.get("fanout", {}):
        paths += [
            (f"fan-out {key}: delivered msg/s", ("fanout", key, "delivered_per_second")),
            *(
                (f"fan-out {key}: {metric} ms", ("fanout", key, "latency_ms", metric))
                for metric in ("p50", "p99", "max")
            ),
            (f"fan-out {key}: delivered/expected", ("fanout", key, "delivery_ratio")),
        ]
    return [
        *paths,
        ("open loop: capacity at target, deliveries/s", ("openloop", "capacity_at_target")),
        ("open loop: saturation, delivered/s", ("openloop", "saturation_delivered_per_second")),
        (
            "open loop: CPU µs per delivery at saturation",
            ("openloop", "saturation_cpu_us_per_delivery", "total"),
        ),
        (
            f"open loop: {OVERLOAD_FACTOR}x capacity, p99 ms",
            ("openloop", "overload", "latency_ms", "p99"),
        ),
        (
            f"open loop: then, p99 ms from {RECOVERY_SECONDS} s on",
            ("openloop", "recovery", "latency_ms", "p99"),
        ),
        ("capacity: WebSockets held", ("capacity", "held")),
        ("capacity: ramp seconds", ("capacity", "ramp_seconds")),
        ("capacity: broadcast reached", ("capacity", "broadcast_reached")),
        ("capacity: broadcast reached all", ("capacity", "broadcast_reached_all")),
        ("capacity: broadcast p99 ms", ("capacity", "broadcast_latency_ms", "p99")),
        *(
            (
                f"capacity: KiB per connection, {part}",
                ("capacity", "memory_per_connection_kib", part),
            )
            for part in ("nginx", "daphne", "redis-server", "total")
        ),
    ]


def rows(results: dict) -> list[tuple]:
    """(label, tuned, seed) for the table, from whatever parts ran."""
    tuned, seed = results.get("tuned", {}), results.get("seed", {})
    out = []
    for label, path in _paths(tuned):
        values = (pick(tuned, path), pick(seed, path))
        if values != (None, None):
            out.append((label, *values))
    return out


def table(results: dict) -> str:
    lines = [f"{'':<46} {'tuned':>12} {'seed':>12} {'tuned/seed':>11}"]
    for label, tuned, seed in rows(results):
        lines.append(f"{label:<46} {cell(tuned):>12} {cell(seed):>12} {ratio(tuned, seed):>11}")
    return "\n".join(lines)


# hosts.cpu_seconds_between's groups, in the order the table shows them.
CPU_COLUMNS = ("nginx", "daphne", "redis", "uwsgi", "rest", "total")


def milliseconds(value) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def _step_cells(step: dict | None) -> tuple[str, str]:
    """A step's delivery and CPU cells of one profile."""
    if step is None:
        return "-", "-"
    latency = step["latency_ms"]
    delivery = (
        f"{cell(step['delivered_per_second'])}, {milliseconds(latency['p50'])} / "
        f"{milliseconds(latency['p99'])}, {cell(step['undelivered'])},"
        f" {cell(step['refused_posts'])}, {cell(step['unanswered'])}"
    )
    cpu = " ".join(cell(step["cpu_us_per_delivery"].get(group)) for group in CPU_COLUMNS)
    return delivery, cpu


OPENLOOP_CELLS = "tuned: delivered/s, p50 / p99, undelivered, refused, unanswered"


def openloop_table(results: dict) -> str:
    """One row per rate, tuned and seed side by side, as issue 18 tabulates them."""
    tuned, seed = (results.get(profile, {}).get("openloop") for profile in ("tuned", "seed"))
    if not tuned and not seed:
        return ""
    shape = tuned or seed
    steps = {
        profile: {step["rate_per_person"]: step for step in run["steps"]} if run else {}
        for profile, run in (("tuned", tuned), ("seed", seed))
    }
    lines = [
        f"open loop: {shape['people']} people in rooms of {shape['room_size']},"
        f" {shape['seconds_per_step']:g} s a step; offered deliveries/s = people x rate x"
        f" {shape['room_size']} (every member, the sender too)",
        f"{'rate (offered/s)':<20} {OPENLOOP_CELLS:<66} seed: same",
    ]
    for step in shape["steps"]:
        rate = step["rate_per_person"]
        cells = [_step_cells(steps[profile].get(rate))[0] for profile in ("tuned", "seed")]
        offered = f"{rate:g} ({step['offered_per_second']:,.0f})"
        lines.append(f"{offered:<20} {cells[0]:<66} {cells[1]}")
    cells = [_step_cells(run["recovery"] if run else None)[0] for run in (tuned, seed)]
    recovery = f"then {shape['recovery']['rate_per_person']:g}"
    lines.append(f"{recovery:<20} {cells[0]:<66} {cells[1]}")
    lines.append(
        f"(then: right after the last step, the first step's rate again;"
        f" p50 / p99 of posts from {RECOVERY_SECONDS} s on)"
    )
    lines.append(f"server CPU µs per delivery ({' '.join(CPU_COLUMNS)})")
    for step in shape["steps"]:
        rate = step["rate_per_person"]
        cells = [_step_cells(steps[profile].get(rate))[1] for profile in ("tuned", "seed")]
        lines.append(f"{rate:<20g} tuned: {cells[0]:<46} seed: {cells[1]}")
    return "\n".join(lines)


def targets(results: dict) -> dict:
    tuned, seed = results.get("tuned", {}), results.get("seed", {})
    reached = {}
    fan, seed_fan = tuned.get("fanout", {}).get("default"), seed.get("fanout", {}).get("default")
    if fan and seed_fan:
        reached["fanout 5x seed, p99 <= 100 ms"] = (
            fan["delivered_per_second"] >= 5 * seed_fan["delivered_per_second"]
            and fan["latency_ms"]["p99"] is not None
            and fan["latency_ms"]["p99"] <= 100
        )
    capacity = tuned.get("capacity")
    # --quick opens fewer: nothing to say about 10,000 then.
    if capacity and capacity["target"] >= 10000:
        reached["10,000 WebSockets held, broadcast reaches all"] = (
            capacity["held"] >= 10000 and capacity["broadcast_reached_all"]
        )
    open_loop = tuned.get("openloop")
    # --quick offers less than the target's 6,000 deliveries/s.
    if open_loop and max(step["offered_per_second"] for step in open_loop["steps"]) >= 6000:
        reached["open loop: 6,000 deliveries/s held at p99 <= 100 ms, none undelivered"] = (
            open_loop["capacity_at_target"] >= 6000
        )
        cpu = open_loop["saturation_cpu_us_per_delivery"]["total"]
        reached["open loop: server CPU <= 100 µs per delivery at saturation"] = (
            cpu is not None and cpu <= 100
        )
        reached[
            f"open loop: at {OVERLOAD_FACTOR}x capacity p99 <= 1 s, every post answered,"
            f" none lost; p99 <= 100 ms from {RECOVERY_SECONDS} s after"
        ] = open_loop["overload"] is not None and overload_bounds_held(open_loop)
    again = tuned.get("converge", {}).get("again")
    if again:
        reached["second converge < 30 s, no changes"] = (
            again["seconds"] < 30 and again.get("changed") == 0
        )
    return reached


def summary(report: dict) -> str:
    """What the console shows at the end: the table, the targets, the limits, the machine."""
    raised = report["limits_raised_for_the_benchmark"].items()
    open_loop = openloop_table(report["results"])
    return "\n".join(
        [
            "",
            table(report["results"]),
            "",
            *([open_loop, ""] if open_loop else []),
            *(
                f"target {'reached' if met else 'NOT reached'}: {target}"
                for target, met in report["targets"].items()
            ),
            "limits raised: " + ", ".join(f"{name}={value}" for name, value in raised),
            f"machine: {report['machine']}",
        ]
    )
