"""Fixtures for the ssh scenario: one host reached over SSH as an operator reaches a server.

Run by Molecule's testinfra verifier, which sets MOLECULE_EPHEMERAL_DIRECTORY:
the scenario's inventory, keys and known_hosts live there (molecule/fresh-server.yml).
Every login here is a new SSH connection (no ControlMaster), as after the
run: a firewall that drops new connections cannot hide behind one kept open.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

# The shared helpers of the other scenarios (playbook runner, waiting).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from playbook import connection

CONTAINER = "chatstack-molecule-ssh"


@pytest.fixture(scope="session")
def ephemeral() -> Path:
    directory = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not directory:
        pytest.fail("run through `molecule verify -s ssh`: the keys and inventory are Molecule's")
    return Path(directory)


@pytest.fixture(scope="session")
def inventory(ephemeral) -> Path:
    """The inventory Molecule converged the host with."""
    return ephemeral / "inventory"


@pytest.fixture(scope="session")
def login(ephemeral):
    """login(user, command): a new SSH connection as `user`, the way the converge came in."""
    entry = connection(CONTAINER)

    def run(user: str, command: str = "true") -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
             "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={ephemeral / 'ssh/known_hosts'}",
             "-o", "StrictHostKeyChecking=yes",
             "-i", str(ephemeral / "ssh" / user), "-p", str(entry["ansible_port"]),
             f"{user}@{entry['ansible_host']}", command],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    return run


@pytest.fixture(scope="session")
def console():
    """The host as root through podman exec: the provider's console, for looking only."""
    return testinfra.get_host(f"podman://{CONTAINER}")
