"""Runs the project's playbooks against a test host from inside a test."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_playbook(container: str, tmp_path: Path, *args: str, playbook: str = "site.yml"):
    """ansible-playbook against one Podman container with Molecule's group vars.

    Returns the finished process and its wall time.
    """
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    groups = "".join(
        f"        {group}:\n          hosts:\n            {container}:\n"
        for group in ("lb", "app", "redis")
    )
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    chatstack:\n      vars:\n"
        "        ansible_connection: containers.podman.podman\n"
        f"      children:\n{groups}"
    )
    (inventory / "group_vars").symlink_to(ROOT / "inventory/molecule/group_vars")
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        str(inventory),
        str(ROOT / "playbooks" / playbook),
        *args,
    ]
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "ANSIBLE_NOCOLOR": "1",
        },
        timeout=600,
    )
    return result, time.monotonic() - started


def recap(output: str, container: str) -> dict[str, int]:
    """The PLAY RECAP counters for the container, e.g. {"changed": 0, ...}."""
    line = next(
        line for line in output.splitlines() if line.startswith(container) and "ok=" in line
    )
    return {key: int(value) for key, value in (part.split("=") for part in line.split()[2:])}
