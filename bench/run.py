"""chatstack benchmarks: converge, pages, fan-out, open loop and capacity, tuned against the seed.

Creates two containers from the test image, converges both with
playbooks/site.yml (bench/inventory raises the per-address limits, since all
load comes from one address), turns one back into the seed's design with
bench/seed.yml, loads both the same way, prints a table and writes
build/bench/<time>.json. See bench/README.md.
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from capacity import CapacityPlan, capacity
from fanout import FanoutShape, fanout
from hosts import (
    BENCH,
    CONTAINERS,
    PROFILES,
    REPO,
    ansible,
    cpu_ticks,
    create_container,
    enable_ssh,
    machine,
    memory_kib,
    ready_target,
    remove_containers,
    restart_socket_holders,
)
from load import raise_open_files_limit
from openloop import OpenloopShape, openloop
from pages import pages, static_path
from report import summary, targets

PARTS = ("converge", "pages", "fanout", "openloop", "capacity")
# Role variables the bench inventory raises; printed with every result.
RAISED = (
    "nginx_websocket_rate",
    "nginx_websocket_burst",
    "nginx_websocket_connections_per_client",
    "nginx_login_rate",
    "nginx_login_burst",
    "app_rate_limit_count",
    "app_rate_limit_seconds",
    "app_account_max_connections",
    "app_account_max_rooms",
)


def shapes(quick: bool) -> dict:
    """What each part does; --quick keeps every part but makes it small."""
    if quick:
        return {
            "pages": {"connections": 8, "seconds": 3},
            "fanout": FanoutShape(rooms=4, members=20, senders=2, seconds=4),
            "sweep": [FanoutShape(4, 5, 2, 3), FanoutShape(2, 50, 2, 3)],
            "openloop": OpenloopShape(people=60, room_size=20, rates=(0.5, 1), seconds=5),
            "capacity": CapacityPlan(1000, 20, 100, 32, 60, 100),
        }
    return {
        "pages": {"connections": 8, "seconds": 10},
        "fanout": FanoutShape(rooms=10, members=20, senders=2, seconds=10),
        # Room sizes 5, 50 and 500; at most 500 sockets, which the seed holds too.
        "sweep": [
            FanoutShape(10, 5, 2, 10),
            FanoutShape(10, 50, 2, 10),
            FanoutShape(1, 500, 2, 10),
        ],
        # 600 people in 30 rooms of 20: 1,200 to 12,000 deliveries/s offered.
        "openloop": OpenloopShape(people=600, room_size=20, rates=(0.1, 0.25, 0.5, 1), seconds=15),
        "capacity": CapacityPlan(10000, 20, 100, 32, 240, 100),
    }


def cooldown() -> None:
    # Daphne still tears down the last run's sockets (presence, groups) for a
    # few seconds; the next run should not pay for that.
    time.sleep(5)


# Parts -------------------------------------------------------------------


def converge(args, results: dict, log) -> None:
    """Both hosts converged by site.yml, the seed's then turned into the seed by seed.yml.

    log(name) is the path of a playbook run's log.
    """
    tuned, seed = CONTAINERS["tuned"], CONTAINERS["seed"]
    # --quick converges both fresh hosts in one run: a smoke test of the
    # converge, not a measurement of it.
    together = seed if args.quick else None
    print("converging the tuned host (fresh)...", flush=True)
    results["tuned"]["converge"] = {
        "fresh": ansible("playbooks/site.yml", tuned, log("tuned-1"), together, args.tuned_vars)
    }
    if "converge" in args.only:
        print("converging the tuned host again (no changes)...", flush=True)
        results["tuned"]["converge"]["again"] = ansible(
            "playbooks/site.yml", tuned, log("tuned-2"), extra_vars=args.tuned_vars
        )
    seed_runs = results["seed"]["converge"] = {}
    if not together:
        print("converging the seed host...", flush=True)
        seed_runs["fresh"] = ansible("playbooks/site.yml", seed, log("seed-1"))
    print("turning the seed host into the seed's design (bench/seed.yml)...", flush=True)
    seed_runs["seed_yml"] = ansible("bench/seed.yml", seed, log("seed-2"))


def load_pages(args, shape: dict, hosts: dict, results: dict) -> None:
    static = static_path(hosts["tuned"])
    for profile in PROFILES:
        print(f"pages on {profile}...", flush=True)
        results[profile]["pages"] = {
            key: pages(hosts[profile], path, workers=args.workers, **shape)
            for key, path in (("/chat/", "/chat/"), ("static", static))
        }
        cooldown()


def load_fanout(args, sweep: list[FanoutShape], hosts: dict, results: dict, stamp: str) -> None:
    for index, shape in enumerate(sweep):
        key = "default" if index == 0 else f"{shape.members} per room"
        for profile in PROFILES:
            print(f"fan-out {key} on {profile}...", flush=True)
            results[profile].setdefault("fanout", {})[key] = fanout(
                hosts[profile], shape, f"fan{stamp}-{index}", rate=100, workers=args.workers
            )
            cooldown()


def load_openloop(args, shape: OpenloopShape, hosts: dict, results: dict, stamp: str) -> None:
    for profile in PROFILES:
        print(f"open loop on {profile}...", flush=True)
        name = CONTAINERS[profile]
        results[profile]["openloop"] = openloop(
            hosts[profile], shape, f"open{stamp}", args.workers, lambda name=name: cpu_ticks(name)
        )
        cooldown()


def load_capacity(args, plan: CapacityPlan, hosts: dict, results: dict, stamp: str) -> None:
    for profile in PROFILES:
        print(f"capacity on {profile}...", flush=True)
        name = CONTAINERS[profile]
        restart_socket_holders(profile, hosts[profile])
        results[profile]["capacity"] = capacity(
            hosts[profile], plan, f"cap{stamp}", args.workers, lambda name=name: memory_kib(name)
        )
        cooldown()


def run_parts(args, report: dict, out_dir: Path, stamp: str) -> None:
    plan = shapes(args.quick)
    results = report["results"]
    for name in CONTAINERS.values():
        create_container(name)
    print("installing sshd in both hosts...", flush=True)
    enable_ssh(CONTAINERS.values())
    converge(args, results, lambda name: out_dir / f"{stamp}-{name}.log")
    hosts = {profile: ready_target(profile) for profile in PROFILES}

    # Part by part, each profile right after the other, so that the noise of
    # a shared machine hits both alike.
    if "pages" in args.only:
        load_pages(args, plan["pages"], hosts, results)
    if "fanout" in args.only:
        load_fanout(args, [plan["fanout"], *plan["sweep"]], hosts, results, stamp)
    if "openloop" in args.only:
        load_openloop(args, plan["openloop"], hosts, results, stamp)
    if "capacity" in args.only:
        load_capacity(args, plan["capacity"], hosts, results, stamp)


# Main --------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a few minutes")
    parser.add_argument(
        "--only",
        type=lambda value: set(value.split(",")),
        default=set(PARTS),
        help=f"comma-separated parts to run: {','.join(PARTS)} (hosts are always converged)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--tuned-vars",
        metavar="JSON",
        help="variables for the tuned host's converge, to measure a variant"
        """ (e.g. '{"app_channel_layer": "channels_redis.pubsub.RedisPubSubChannelLayer"}')""",
    )
    args = parser.parse_args()
    if args.only - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(args.only - set(PARTS)))}")
    if os.geteuid() != 0:
        parser.error("run as root: the test containers use rootful Podman")
    return args


def new_report(args, stamp: str) -> dict:
    group_vars = yaml.safe_load((BENCH / "inventory/group_vars/chatstack.yml").read_text())
    return {
        "started": stamp,
        "quick": args.quick,
        "tuned_vars": args.tuned_vars,
        "parts": sorted(args.only),
        "machine": machine(),
        "limits_raised_for_the_benchmark": {name: group_vars[name] for name in RAISED},
        "wheelhouse_cached": (REPO / "build/wheelhouse").is_dir(),
        "results": {profile: {} for profile in PROFILES},
    }


def main() -> int:
    args = parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "containers.conf"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    raise_open_files_limit()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = REPO / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = new_report(args, stamp)
    print("limits raised for the benchmark (bench/inventory/group_vars/chatstack.yml):")
    for name, value in report["limits_raised_for_the_benchmark"].items():
        print(f"  {name}: {value}")
    started = time.monotonic()
    remove_containers()
    try:
        run_parts(args, report, out_dir, stamp)
    except Exception as error:
        report["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        if not args.keep:
            remove_containers()
        report["seconds"] = round(time.monotonic() - started, 1)
        report["machine"]["load_average_at_end"] = os.getloadavg()
        report["targets"] = targets(report["results"])
        path = out_dir / f"{stamp}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(summary(report))
        print(f"wrote {path.relative_to(REPO)} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
