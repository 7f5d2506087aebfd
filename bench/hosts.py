"""The bench's hosts: two containers, reached over SSH, converged by Ansible, ready for load."""

import os
import platform
import re
import subprocess
import time
import urllib.error
from pathlib import Path

import yaml
from load import Target, with_users
from sockets import probe_websocket

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
IMAGE = "localhost/chatstack-debian12"
PROFILES = ("tuned", "seed")
CONTAINERS = {profile: f"chatstack-bench-{profile}" for profile in PROFILES}
# Ansible reaches the hosts over SSH, as it reaches a real server (key, known
# hosts and the inventory giving each host's address live here).
SSH_DIR = REPO / "build" / "bench" / "ssh"


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


# Process names (comm) and the group their CPU time is reported under.
CPU_GROUPS = {"nginx": "nginx", "daphne": "daphne", "redis-server": "redis", "uwsgi": "uwsgi"}


def cpu_ticks(name: str) -> dict[int, tuple[str, int]]:
    """User plus system CPU time of every process in the container, in clock ticks, by PID.

    From /proc/<pid>/stat, counted by the kernel: exact to a tick, unlike a
    sampling tool. A process that ends between two readings takes its time
    with it (only the short-lived `cat` of the readings does, here).
    """
    # Processes may end between the glob and the read: cat's complaint is no error.
    stat = podman("exec", name, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null", check=False)
    ticks = {}
    for line in stat.stdout.splitlines():
        # comm is in parentheses and may hold spaces or parentheses itself.
        pid, _, rest = line.partition(" (")
        comm, _, fields = rest.rpartition(") ")
        values = fields.split()
        # utime and stime: fields 14 and 15 of proc_pid_stat(5), 12th and 13th after comm.
        ticks[int(pid)] = (CPU_GROUPS.get(comm, "rest"), int(values[11]) + int(values[12]))
    return ticks


def cpu_seconds_between(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two cpu_ticks() readings, by group, and their total."""
    per_tick = 1 / os.sysconf("SC_CLK_TCK")
    spent = dict.fromkeys([*CPU_GROUPS.values(), "rest"], 0.0)
    for pid, (group, ticks) in after.items():
        earlier = before.get(pid)
        # A PID reused by a process of another group is a new process.
        start = earlier[1] if earlier and earlier[0] == group else 0
        spent[group] += (ticks - start) * per_tick
    spent["total"] = sum(spent.values())
    return spent


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
    env = {
        **os.environ,
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_roles,ansible.posix.profile_tasks",
        "PROFILE_ROLES_SUMMARY_ONLY": "true",
        "PROFILE_TASKS_SUMMARY_ONLY": "true",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "10",
    }
    started = time.monotonic()
    with log.open("w") as output:
        # The command is built above from this repository's own paths.
        finished = subprocess.run(  # noqa: S603
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.monotonic() - started
    if finished.returncode:
        raise RuntimeError(f"{playbook} failed on {host}; see {log}")
    return {
        "seconds": round(seconds, 1),
        "together_with": together_with,
        **_recap(log.read_text(), host),
        "log": str(log.relative_to(REPO)),
    }


def _recap(text: str, host: str) -> dict:
    """The host's PLAY RECAP counts and the profiling callbacks' times, from a playbook's log."""
    recap = re.search(rf"^{re.escape(host)}\s+:\s+(.+)$", text, re.MULTILINE).group(1)
    roles_recap, tasks_recap = text.split("ROLES RECAP", 1)[1].split("TASKS RECAP", 1)
    timings = r"^(\S.*?) -+ (\d+\.\d+)s$"
    roles = {
        name: float(value)
        for name, value in re.findall(timings, roles_recap, re.MULTILINE)
        if name != "total"
    }
    return {
        **{key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", recap)},
        # profile_roles files tasks outside roles under their module's name.
        "roles_seconds": {
            name: value for name, value in roles.items() if (REPO / "roles" / name).is_dir()
        },
        "outside_roles_seconds": round(
            sum(value for name, value in roles.items() if not (REPO / "roles" / name).is_dir()), 2
        ),
        "slowest_tasks": [
            [name, float(value)] for name, value in re.findall(timings, tasks_recap, re.MULTILINE)
        ],
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


def ready_target(profile: str) -> Target:
    """The profile's host once pages and WebSockets answer, with signed-up users."""
    name = CONTAINERS[profile]
    certificate = podman("exec", name, "cat", "/etc/ssl/certs/chatstack.crt").stdout
    target = Target(base_url(name), certificate)
    # Handlers restart uWSGI and Daphne at the end of a converge.
    target = until_ready(lambda: with_users(target, f"{profile}{int(time.time())}u"), 90)
    restart_socket_holders(profile, target)
    return target


def restart_socket_holders(profile: str, target: Target) -> None:
    """Fresh Daphne and Nginx processes, in that order, until a WebSocket is accepted.

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
    until_ready(lambda: probe_websocket(target), 90)
