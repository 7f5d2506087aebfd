"""chatstack benchmarks: converge, pages, fan-out and capacity, tuned against the seed.

Creates two containers from the test image, converges both with
playbooks/site.yml (bench/inventory raises the per-address limits, since all
load comes from one address), turns one back into the seed's design with
bench/seed.yml, loads both the same way, prints a table and writes
build/bench/<time>.json. See bench/README.md.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import load
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
IMAGE = "localhost/chatstack-debian12"
PROFILES = ("tuned", "seed")
CONTAINERS = {profile: f"chatstack-bench-{profile}" for profile in PROFILES}
PARTS = ("converge", "pages", "fanout", "capacity")
# Ansible reaches the hosts over SSH, as it reaches a real server (key, known
# hosts and the inventory giving each host's address live here).
SSH_DIR = REPO / "build" / "bench" / "ssh"
# Role variables the bench inventory raises; printed with every result.
RAISED = (
    "nginx_websocket_rate",
    "nginx_websocket_burst",
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
            "fanout": load.FanoutShape(rooms=4, members=20, senders=2, seconds=4),
            "sweep": [load.FanoutShape(4, 5, 2, 3), load.FanoutShape(2, 50, 2, 3)],
            "capacity": load.CapacityPlan(1000, 20, 100, 32, 60, 100),
        }
    return {
        "pages": {"connections": 8, "seconds": 10},
        "fanout": load.FanoutShape(rooms=10, members=20, senders=2, seconds=10),
        # Room sizes 5, 50 and 500; at most 500 sockets, which the seed holds too.
        "sweep": [
            load.FanoutShape(10, 5, 2, 10),
            load.FanoutShape(10, 50, 2, 10),
            load.FanoutShape(1, 500, 2, 10),
        ],
        "capacity": load.CapacityPlan(10000, 20, 100, 32, 240, 100),
    }


# Podman ------------------------------------------------------------------


def podman(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    # Arguments are this module's own: container names, fixed commands.
    return subprocess.run(  # noqa: S603
        ["podman", *args],  # noqa: S607
        check=check,
        capture_output=True,
        text=True,
        input=stdin,
    )


def remove_containers() -> None:
    podman("rm", "--force", "--ignore", *CONTAINERS.values())


def create_container(name: str) -> None:
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--hostname",
        name,
        "--systemd=always",
        # The firewall role loads nftables rules into the container's netns.
        "--cap-add",
        "NET_ADMIN",
        "--publish",
        "127.0.0.1::443",
        IMAGE,
        "/sbin/init",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = podman("exec", name, "systemctl", "is-system-running", "--wait", check=False)
        if state.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(1)
    raise RuntimeError(f"{name}: systemd did not finish booting")


def enable_ssh(names) -> None:
    """sshd in each container, root's key the bench's own; writes SSH_DIR/inventory.yml.

    Through Podman's connection every task costs a few podman execs (no
    pipelining); over SSH with pipelining and a persistent connection it costs
    one round trip, as on a real server.
    """
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    key = SSH_DIR / "id_ed25519"
    if not key.exists():
        subprocess.run(  # noqa: S603
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "chatstack-bench", "-f", key],  # noqa: S607
            check=True,
        )
    # New containers, new host keys, perhaps the addresses of old ones.
    known_hosts = SSH_DIR / "known_hosts"
    known_hosts.unlink(missing_ok=True)
    hosts = {}
    for name in names:
        podman(
            "exec", name, "sh", "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive"
            " apt-get install -qq -y --no-install-recommends openssh-server",
        )  # fmt: skip
        podman(
            "exec", "-i", name, "sh", "-c",
            "install -d -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys",
            stdin=key.with_suffix(".pub").read_text(),
        )  # fmt: skip
        podman("exec", name, "systemctl", "enable", "--now", "ssh.service")
        hosts[name] = {
            "ansible_connection": "ssh",
            "ansible_host": podman(
                "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name
            ).stdout.strip(),
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new"
            ),
        }
    (SSH_DIR / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))


def base_url(name: str) -> str:
    address = podman("port", name, "443/tcp").stdout.split()[0]
    return f"https://{address}"


def memory_kib(name: str) -> dict:
    """Resident memory of the processes that hold WebSockets, in KiB."""
    totals = dict.fromkeys(("nginx", "daphne", "redis-server"), 0)
    for line in podman("exec", name, "ps", "-eo", "rss=,comm=").stdout.splitlines():
        rss, command = line.split(None, 1)
        if command in totals:
            totals[command] += int(rss)
    totals["total"] = sum(totals.values())
    return totals


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 2**20, 1),
        "kernel": platform.release(),
        "cpu": model.group(1) if model else platform.processor(),
        "load_average": os.getloadavg(),
        "podman": podman("--version").stdout.strip(),
    }


# Ansible -----------------------------------------------------------------


def ansible(
    playbook: str,
    host: str,
    log: Path,
    together_with: str | None = None,
    extra_vars: str | None = None,
) -> dict:
    """Runs a playbook against one host; returns wall time, its recap and per-role times.

    together_with converges a second host in the same run (--quick); extra_vars
    (JSON) overrides inventory variables, to measure a variant of the tuned host.
    """
    env = {
        **os.environ,
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_roles,ansible.posix.profile_tasks",
        "PROFILE_ROLES_SUMMARY_ONLY": "true",
        "PROFILE_TASKS_SUMMARY_ONLY": "true",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "10",
    }
    command = [
        str(REPO / ".venv/bin/ansible-playbook"),
        "--inventory",
        str(BENCH / "inventory"),
        # After the first, so that its connection variables win.
        "--inventory",
        str(SSH_DIR / "inventory.yml"),
        "--limit",
        ",".join(filter(None, (host, together_with))),
        *(["--extra-vars", extra_vars] if extra_vars else []),
        playbook,
    ]
    started = time.monotonic()
    with log.open("w") as output:
        # The command is built above from this repository's own paths.
        finished = subprocess.run(  # noqa: S603
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.monotonic() - started
    text = log.read_text()
    if finished.returncode:
        raise RuntimeError(f"{playbook} failed on {host}; see {log}")
    recap = re.search(rf"^{re.escape(host)}\s+:\s+(.+)$", text, re.MULTILINE).group(1)
    roles_recap = text.split("ROLES RECAP", 1)[1].split("TASKS RECAP", 1)
    timings = r"^(\S.*?) -+ (\d+\.\d+)s$"
    roles = {
        name: float(value)
        for name, value in re.findall(timings, roles_recap[0], re.MULTILINE)
        if name != "total"
    }
    return {
        "seconds": round(seconds, 1),
        "together_with": together_with,
        **{key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", recap)},
        # profile_roles files tasks outside roles under their module's name.
        "roles_seconds": {
            name: value for name, value in roles.items() if (REPO / "roles" / name).is_dir()
        },
        "outside_roles_seconds": round(
            sum(value for name, value in roles.items() if not (REPO / "roles" / name).is_dir()), 2
        ),
        "slowest_tasks": [
            [name, float(value)]
            for name, value in re.findall(timings, roles_recap[1], re.MULTILINE)
        ],
        "log": str(log.relative_to(REPO)),
    }


# Readiness ---------------------------------------------------------------


def until_ready(action, seconds: float):
    """Retries action() while the host is still starting; returns its result."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except (OSError, RuntimeError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def ready_target(profile: str) -> load.Target:
    """The profile's host once pages and WebSockets answer, with signed-up users."""
    name = CONTAINERS[profile]
    certificate = podman("exec", name, "cat", "/etc/ssl/certs/chatstack.crt").stdout
    target = load.Target(base_url(name), certificate)
    # Handlers restart uWSGI and Daphne at the end of a converge.
    target = until_ready(lambda: load.with_users(target, f"{profile}{int(time.time())}u"), 90)
    restart_socket_holders(profile)
    until_ready(lambda: load.probe_websocket(target), 90)
    return target


def restart_socket_holders(profile: str) -> None:
    """Fresh Daphne and Nginx processes, in that order.

    Fresh, because heaps grown by earlier parts would hold new sockets without
    growing and hide their cost. In that order, because Nginx takes a Daphne
    that refused one upgrade out of its pool for 10 s, and afterwards sends it
    one trial request that must end before the next: for a WebSocket, that is
    the rest of the benchmark.
    """
    name = CONTAINERS[profile]
    podman("exec", name, "systemctl", "restart", "chatstack-daphne@*.service")
    units = podman(
        "exec", name, "systemctl", "list-units", "--plain", "--no-legend", "chatstack-daphne@*"
    ).stdout
    ports = set(re.findall(r"chatstack-daphne@(\d+)\.service", units))

    def listening() -> None:
        if not ports <= set(
            re.findall(r"127\.0\.0\.1:(\d+) ", podman("exec", name, "ss", "-Hltn").stdout)
        ):
            raise RuntimeError(f"{name}: Daphne is not listening on all of {sorted(ports)} yet")

    until_ready(listening, 90)
    podman("exec", name, "systemctl", "restart", "nginx.service")


# Report ------------------------------------------------------------------


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


def rows(results: dict) -> list[tuple]:
    """(label, tuned, seed) for the table, from whatever parts ran."""
    tuned, seed = results.get("tuned", {}), results.get("seed", {})
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
    paths += [
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
    out = []
    for label, path in paths:
        values = (pick(tuned, path), pick(seed, path))
        if values != (None, None):
            out.append((label, *values))
    return out


def table(results: dict) -> str:
    lines = [f"{'':<46} {'tuned':>12} {'seed':>12} {'tuned/seed':>11}"]
    for label, tuned, seed in rows(results):
        lines.append(f"{label:<46} {cell(tuned):>12} {cell(seed):>12} {ratio(tuned, seed):>11}")
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
    again = tuned.get("converge", {}).get("again")
    if again:
        reached["second converge < 30 s, no changes"] = (
            again["seconds"] < 30 and again.get("changed") == 0
        )
    return reached


# Main --------------------------------------------------------------------


def cooldown() -> None:
    # Daphne still tears down the last run's sockets (presence, groups) for a
    # few seconds; the next run should not pay for that.
    time.sleep(5)


def run_parts(args, report: dict, out_dir: Path, stamp: str) -> None:
    plan = shapes(args.quick)
    results = report["results"]
    for name in CONTAINERS.values():
        create_container(name)
    print("installing sshd in both hosts...", flush=True)
    enable_ssh(CONTAINERS.values())

    # --quick converges both fresh hosts in one run: a smoke test of the
    # converge, not a measurement of it.
    together = CONTAINERS["seed"] if args.quick else None
    print("converging the tuned host (fresh)...", flush=True)
    results["tuned"]["converge"] = {
        "fresh": ansible(
            "playbooks/site.yml",
            CONTAINERS["tuned"],
            out_dir / f"{stamp}-tuned-1.log",
            together,
            args.tuned_vars,
        )
    }
    if "converge" in args.only:
        print("converging the tuned host again (no changes)...", flush=True)
        results["tuned"]["converge"]["again"] = ansible(
            "playbooks/site.yml",
            CONTAINERS["tuned"],
            out_dir / f"{stamp}-tuned-2.log",
            extra_vars=args.tuned_vars,
        )
    seed = results["seed"]["converge"] = {}
    if not together:
        print("converging the seed host...", flush=True)
        seed["fresh"] = ansible(
            "playbooks/site.yml", CONTAINERS["seed"], out_dir / f"{stamp}-seed-1.log"
        )
    print("turning the seed host into the seed's design (bench/seed.yml)...", flush=True)
    seed["seed_yml"] = ansible(
        "bench/seed.yml", CONTAINERS["seed"], out_dir / f"{stamp}-seed-2.log"
    )
    hosts = {profile: ready_target(profile) for profile in PROFILES}

    # Part by part, each profile right after the other, so that the noise of
    # a shared machine hits both alike.
    if "pages" in args.only:
        static = load.static_path(hosts["tuned"])
        for profile in PROFILES:
            print(f"pages on {profile}...", flush=True)
            results[profile]["pages"] = {
                key: load.pages(hosts[profile], path, workers=args.workers, **plan["pages"])
                for key, path in (("/chat/", "/chat/"), ("static", static))
            }
            cooldown()
    if "fanout" in args.only:
        for index, shape in enumerate([plan["fanout"], *plan["sweep"]]):
            key = "default" if index == 0 else f"{shape.members} per room"
            for profile in PROFILES:
                print(f"fan-out {key} on {profile}...", flush=True)
                results[profile].setdefault("fanout", {})[key] = load.fanout(
                    hosts[profile], shape, f"fan{stamp}-{index}", rate=100, workers=args.workers
                )
                cooldown()
    if "capacity" in args.only:
        for profile in PROFILES:
            print(f"capacity on {profile}...", flush=True)
            name = CONTAINERS[profile]
            restart_socket_holders(profile)
            until_ready(lambda profile=profile: load.probe_websocket(hosts[profile]), 90)
            results[profile]["capacity"] = load.capacity(
                hosts[profile],
                plan["capacity"],
                f"cap{stamp}",
                args.workers,
                lambda name=name: memory_kib(name),
            )
            cooldown()


def main() -> int:
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
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "containers.conf"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    load.raise_open_files_limit()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = REPO / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    group_vars = yaml.safe_load((BENCH / "inventory/group_vars/chatstack.yml").read_text())
    report = {
        "started": stamp,
        "quick": args.quick,
        "tuned_vars": args.tuned_vars,
        "parts": sorted(args.only),
        "machine": machine(),
        "limits_raised_for_the_benchmark": {name: group_vars[name] for name in RAISED},
        "wheelhouse_cached": (REPO / "build/wheelhouse").is_dir(),
        "results": {profile: {} for profile in PROFILES},
    }
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
        print()
        print(table(report["results"]))
        print()
        for target, met in report["targets"].items():
            print(f"target {'reached' if met else 'NOT reached'}: {target}")
        raised = report["limits_raised_for_the_benchmark"].items()
        print("limits raised: " + ", ".join(f"{name}={value}" for name, value in raised))
        print(f"machine: {report['machine']}")
        print(f"wrote {path.relative_to(REPO)} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
