"""The hosts that keep the shared secrets stay pinned when the inventory's order changes.

Runs molecule/tests/secret-keepers.yml (the roles' own secret tasks with
playbooks/group_vars/all/cluster.yml) on two plain containers of its own,
chatstack-pin-*, in every one of the app, redis and db groups: first with one
host first, then with the other first. Without pinning, the new first host
would generate new secrets, and every user would be logged out.
"""

import json
import uuid
from pathlib import Path

import pytest
from playbook import ROOT, run_playbook
from testhost import podman_result

# Containers of its own: once, in the default scenario, not per host under test.
pytestmark = pytest.mark.usefixtures("debian12_container")

IMAGE = "localhost/chatstack-debian12"
SECRETS = {
    "app_secret_key": "/etc/chatstack/secret_key",
    "redis_app_password": "/etc/redis/chatstack.password",
    "postgresql_password": "/etc/postgresql/chatstack.password",
}


@pytest.fixture(scope="module")
def pin_hosts():
    """Two plain Debian 12 containers: enough for Ansible, nothing installed."""
    names = [f"chatstack-pin-{uuid.uuid4().hex[:8]}-{n}" for n in ("a", "b")]
    try:
        for name in names:
            started = podman_result("run", "--detach", "--name", name, IMAGE, "sleep", "infinity")
            assert started.returncode == 0, started.stderr
        yield names
    finally:
        for name in names:
            podman_result("rm", "--force", "--ignore", "--time", "0", name)


def kept(container: str) -> dict[str, str]:
    """The secret files on the container: {secret: content}, only those that exist."""
    files = {}
    for secret, path in SECRETS.items():
        read = podman_result("exec", container, "cat", path)
        if read.returncode == 0:
            files[secret] = read.stdout
    return files


def given(container: str) -> dict[str, str]:
    """The secrets the playbook published on the container."""
    return json.loads(podman_result("exec", container, "cat", "/root/given-secrets.json").stdout)


def share(tmp_path: Path, name: str, order: list[str], *args: str) -> None:
    """Runs the playbook with `order` as the order of the hosts in every group."""
    run_dir = tmp_path / name
    (run_dir / "play").mkdir(parents=True)
    # Next to the playbook, as for the project's playbooks: cluster.yml's wiring.
    (run_dir / "play/group_vars").symlink_to(ROOT / "playbooks/group_vars")
    play = run_dir / "play/secret-keepers.yml"
    play.write_text((Path(__file__).parent / "secret-keepers.yml").read_text())
    groups = {group: order for group in ("app", "redis", "db")}
    result, _ = run_playbook(groups, run_dir, *args, playbook=str(play))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_reordering_the_inventory_keeps_the_secrets(pin_hosts, tmp_path):
    first, second = pin_hosts
    share(tmp_path, "first", [first, second])
    secrets = kept(first)
    assert set(secrets) == set(SECRETS), "the first host of a new site generated no secrets"
    assert sorted(kept(second)) == []
    assert given(second) == given(first) == secrets

    share(tmp_path, "reordered", [second, first])
    assert sorted(kept(second)) == [], (
        "a host put first in the inventory generated new secrets: every user would be"
        " logged out and the app would lose Redis and PostgreSQL"
    )
    assert kept(first) == secrets
    assert given(second) == given(first) == secrets, "the hosts were given other secrets"


def test_an_explicit_keeper_wins(pin_hosts, tmp_path):
    first, second = pin_hosts
    share(tmp_path, "pinned", [first, second], "-e", f"redis_password_host={second}")
    password = kept(second)["redis_app_password"]
    assert password != kept(first).get("redis_app_password")
    assert given(first)["redis_app_password"] == password, (
        "redis_password_host did not choose the host that keeps the Redis password"
    )
