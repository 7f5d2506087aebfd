"""The host under test from the controller's side: its container, units and addresses.

Test modules and conftest files share these from here, never from each other.
"""

import socket
import subprocess

from waiting import wait_until

# What every converged single host runs.
UNITS = [
    "redis-server.service",
    "nginx.service",
    "chatstack-uwsgi.socket",
    "chatstack-uwsgi.service",
    "chatstack-daphne@7001.service",
    "chatstack-prune.timer",
]

# The first of the host's Daphne processes.
DAPHNE = "chatstack-daphne@7001.service"

# Forty login POSTs from inside the host: its own address, 127.0.0.1, meets the limit.
LOGIN_FLOOD = """
import http.client, ssl
context = ssl._create_unverified_context()
for _ in range(40):
    connection = http.client.HTTPSConnection("127.0.0.1", 443, context=context)
    connection.request("POST", "/accounts/login/", body="username=x&password=y",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    print(connection.getresponse().status)
"""


def podman_result(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A podman command's outcome, failed or not."""
    return subprocess.run(
        ["podman", *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def podman(*args: str, timeout: float = 120) -> str:
    """A podman command's output; CalledProcessError when it fails."""
    return subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True, timeout=timeout
    ).stdout.strip()


def container_address(container: str, network: str | None = None) -> str:
    """The container's address on Podman's default network, or on `network`."""
    if network is None:
        return podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", container)
    template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    return podman("inspect", "--format", template, container)


def container_state(container: str) -> str:
    """Podman's state of the container: "running", "paused", "exited", ..."""
    return podman("inspect", "--format", "{{.State.Status}}", container)


def start_at_address(container: str, network: str, address: str) -> None:
    """Starts a stopped container at the address it had on `network`, as a
    rebooted server keeps its own: Podman 4 would give it a new one."""
    podman("network", "disconnect", network, container)
    podman("network", "connect", "--ip", address, network, container)
    podman("start", container)


def published_https_url(container: str) -> str:
    """The container's HTTPS address on the controller; a restart may publish a new port."""
    return f"https://{podman('port', container, '443/tcp').split()[0]}"


def can_connect(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def systemd_state(container: str, timeout: float) -> str:
    """The container's systemd state once booted ("running", "degraded", ...).

    Right after the container starts, systemd's bus may not exist yet ("Failed
    to connect to bus", no state at all): ask again until systemd answers.
    """

    def state() -> str:
        command = ["exec", container, "systemctl", "is-system-running", "--wait"]
        return podman_result(*command, timeout=timeout).stdout.strip()

    return wait_until(state, timeout, f"systemd in {container} answers")


def main_pid(host, unit: str) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value {unit}"))


def sshd_port(host) -> int:
    """The port sshd listens on: 22, or a provider's own (fresh-server.yml's 2222)."""
    effective = host.check_output("sshd -T")
    return int(next(line.split()[1] for line in effective.splitlines() if line.startswith("port ")))


def daphne_units(host) -> list[str]:
    """The host's Daphne processes, e.g. ["chatstack-daphne@7001.service", ...]."""
    units = host.check_output("systemctl list-units --plain --no-legend 'chatstack-daphne@*'")
    return [line.split()[0] for line in units.splitlines()]
