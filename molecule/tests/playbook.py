"""Runs the project's playbooks against a test host from inside a test."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testhost import podman_result

ROOT = Path(__file__).resolve().parents[2]


# One host in every group, a site of its own, as the default and resilience
# scenarios have it.
SINGLE_HOST_GROUPS = ("standalone", "lb", "app", "redis")


def connection(container: str, over_podman: bool = False) -> dict[str, str]:
    """How a test's run reaches the container: the way the scenario's converge did.

    A container with sshd's port 2222 published was made a server by
    molecule/fresh-server.yml: over SSH as admin, with the key and known_hosts
    it wrote. Any other container, or `over_podman`: podman exec as root.
    """
    ssh_dir = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "ssh")
    forward = podman_result("port", container, "2222/tcp").stdout.split()
    if over_podman or not forward or not (ssh_dir / "admin").exists():
        return {"ansible_connection": "containers.podman.podman"}
    address, port = forward[0].rsplit(":", 1)
    return {
        "ansible_connection": "ssh",
        "ansible_host": address,
        "ansible_port": port,
        "ansible_user": "admin",
        "ansible_ssh_private_key_file": str(ssh_dir / "admin"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh_dir / 'known_hosts'}"
        " -o StrictHostKeyChecking=yes",
    }


def inventory_for(
    hosts: str | dict[str, list[str]], tmp_path: Path, over_podman: bool = False
) -> Path:
    """An inventory of the test containers with Molecule's group vars.

    `hosts` is one container (put in every group) or {group: [containers]}.
    """
    groups = {group: [hosts] for group in SINGLE_HOST_GROUPS} if isinstance(hosts, str) else hosts
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    # Each container's connection once (a `podman port` each), its groups by name; the
    # order the groups name them in stays (the secret-keeper tests reorder on purpose).
    containers = dict.fromkeys(member for members in groups.values() for member in members)
    chatstack = {
        "hosts": {container: connection(container, over_podman) for container in containers},
        "children": {group: {"hosts": dict.fromkeys(members)} for group, members in groups.items()},
    }
    # JSON is YAML, and needs no quoting rules.
    (inventory / "hosts.yml").write_text(
        json.dumps({"all": {"children": {"chatstack": chatstack}}})
    )
    (inventory / "group_vars").symlink_to(ROOT / "inventory/molecule/group_vars")
    return inventory


def fake_inventory(
    directory: Path, groups: dict[str, list[str]], hosts: dict[str, dict], site_vars: dict
) -> Path:
    """An inventory of hosts never contacted (the wiring tests): the site's `groups`, each
    host's vars, the site's group vars and the project's wiring (playbooks/group_vars/all)."""
    children = {group: {"hosts": dict.fromkeys(members)} for group, members in groups.items()}
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "group_vars/all").symlink_to(ROOT / "playbooks/group_vars/all")
    # JSON is YAML. The site's vars in group_vars/, as an operator's: group vars in
    # hosts.yml would yield to the wiring's group_vars/all.
    (inventory / "group_vars/chatstack.yml").write_text(json.dumps(site_vars))
    (inventory / "hosts.yml").write_text(
        json.dumps({"all": {"hosts": hosts, "children": {"chatstack": {"children": children}}}})
    )
    return inventory


def wiring_facts(address: str) -> dict:
    """What setup would gather on a fake host: the address on eth0 (and loopback), two cores."""
    return {
        "processor_nproc": 2,
        "interfaces": ["lo", "eth0"],
        "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1"}},
        "eth0": {"device": "eth0", "ipv4": {"address": address}},
    }


def render_wiring(
    directory: Path,
    groups: dict[str, list[str]],
    addresses: dict[str, str],
    site_vars: dict,
    keeps: dict[str, list[str]] | None = None,
) -> Path:
    """tests/wiring/render.yml over a fake site of `groups`, each host at its address;
    `keeps` is {host: [secrets it keeps]}. Returns the directory of each host's files."""
    members = dict.fromkeys(host for hosts in groups.values() for host in hosts)
    hosts = {
        host: {
            "chatstack_private_address": addresses[host],
            "chatstack_kept_secrets": dict.fromkeys((keeps or {}).get(host, []), host),
            "wiring_facts": wiring_facts(addresses[host]),
        }
        for host in members
    }
    out = directory / "out"
    result, _ = run_playbook(
        fake_inventory(directory, groups, hosts, site_vars),
        directory,
        "-c",
        "local",
        "-e",
        f"wiring_out={out}",
        playbook=str(ROOT / "tests/wiring/render.yml"),
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return out


def run_playbook(
    hosts: str | dict[str, list[str]] | Path,
    tmp_path: Path,
    *args: str,
    playbook: str = "site.yml",
    over_podman: bool = False,
):
    """ansible-playbook against test containers (see inventory_for), or with
    the inventory at `hosts` when it is a path.

    Returns the finished process and its wall time.
    """
    inventory = hosts if isinstance(hosts, Path) else inventory_for(hosts, tmp_path, over_podman)
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


def restore_newest(hosts: str | dict[str, list[str]], tmp_path: Path, target: str) -> None:
    """restore.yml puts the newest backup the timer made on `target` back in place."""
    run_playbook_ok(
        hosts, tmp_path, "-l", target, "-e", "restore_scheduled=newest",
        "-e", f"restore_confirm={target}", "-e", f"backup_root={tmp_path / 'backups'}",
        playbook="restore.yml",
    )  # fmt: skip


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


def changed_tasks(output: str) -> list[str]:
    """Each task that reported a change, as "TASK [role : name] host", from a run's output."""
    changed, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line.rstrip(" *")
        elif line.startswith("changed: ["):
            changed.append(f"{task} {line.split('[', 1)[1].split(']', 1)[0]}")
    return changed


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
