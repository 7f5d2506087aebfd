"""Runs the project's playbooks against a test host from inside a test."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# One host in every group, a site of its own, as the default and resilience
# scenarios have it.
SINGLE_HOST_GROUPS = ("standalone", "lb", "app", "redis")


def podman_inventory(hosts: str | dict[str, list[str]], tmp_path: Path) -> Path:
    """An inventory of Podman containers with Molecule's group vars.

    `hosts` is one container (put in every group) or {group: [containers]}.
    """
    groups = {group: [hosts] for group in SINGLE_HOST_GROUPS} if isinstance(hosts, str) else hosts
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    children = {group: {"hosts": dict.fromkeys(members)} for group, members in groups.items()}
    chatstack = {"vars": {"ansible_connection": "containers.podman.podman"}, "children": children}
    # JSON is YAML, and needs no quoting rules.
    (inventory / "hosts.yml").write_text(
        json.dumps({"all": {"children": {"chatstack": chatstack}}})
    )
    (inventory / "group_vars").symlink_to(ROOT / "inventory/molecule/group_vars")
    return inventory


def run_playbook(
    hosts: str | dict[str, list[str]] | Path,
    tmp_path: Path,
    *args: str,
    playbook: str = "site.yml",
):
    """ansible-playbook against Podman containers (see podman_inventory), or with
    the inventory at `hosts` when it is a path.

    Returns the finished process and its wall time.
    """
    inventory = hosts if isinstance(hosts, Path) else podman_inventory(hosts, tmp_path)
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        str(inventory),
        str(ROOT / "playbooks" / playbook),
        *args,
    ]
    started = time.monotonic()
    result = run_ansible(command)
    return result, time.monotonic() - started


def run_playbook_ok(
    hosts: str | dict[str, list[str]] | Path, tmp_path: Path, *args: str, playbook: str
) -> None:
    """run_playbook() in a directory of its own under tmp_path, which must succeed;
    prints its wall time."""
    run_dir = tmp_path / f"{playbook}-{len(list(tmp_path.glob(f'{playbook}-*')))}"
    run_dir.mkdir()
    result, seconds = run_playbook(hosts, run_dir, *args, playbook=playbook)
    print(f"{playbook}: {seconds:.0f}s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def run_ansible(command: list[str]) -> subprocess.CompletedProcess:
    """An Ansible command with the project's configuration, output captured."""
    return subprocess.run(
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


def render_role_template(container: str, role: str, template: str, dest: str, **variables):
    """The role's template written to dest on the container, with the role's defaults
    and `variables` (no inventory): the finished `ansible` process."""
    command = [
        str(Path(sys.executable).with_name("ansible")),
        "all",
        "-i",
        f"{container},",
        "-c",
        "containers.podman.podman",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={ROOT}/roles/{role}/templates/{template} dest={dest}",
        "-e",
        f"@{ROOT}/roles/{role}/defaults/main.yml",
        "-e",
        json.dumps(variables),
    ]
    return run_ansible(command)


def recap(output: str, container: str) -> dict[str, int]:
    """The PLAY RECAP counters for the container, e.g. {"changed": 0, ...}."""
    line = next(
        line for line in output.splitlines() if line.startswith(container) and "ok=" in line
    )
    return {key: int(value) for key, value in (part.split("=") for part in line.split()[2:])}


def app_copy(tmp_path: Path, name: str, change) -> Path:
    """A copy of the app's source with `change(source_dir)` applied."""
    source = tmp_path / name
    shutil.copytree(
        ROOT / "app", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    change(source)
    return source


def mark_login_page(marker: str):
    """A change for app_copy() that makes a release visible from outside: the login
    page's title carries `marker`."""

    def change(source: Path) -> None:
        template = source / "chatstack/chat/templates/registration/login.html"
        text = template.read_text()
        # The title's words are translated; the block that holds them is not.
        assert "{% block title %}" in text
        template.write_text(text.replace("{% block title %}", f"{{% block title %}}{marker} "))

    return change
