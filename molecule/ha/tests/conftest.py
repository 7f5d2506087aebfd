"""Fixtures for the ha scenario: two load balancers sharing an address, one
sentinel-managed Redis shard of two hosts, and PostgreSQL on two hosts under
Patroni.

These tests take no `host` fixture: each runs once for the whole site and
names the hosts it talks to. Run by Molecule's testinfra verifier, or directly:
    pytest molecule/ha/tests
"""

import json
import os
import ssl
import sys
import uuid
from pathlib import Path

import pytest

# The shared helpers of the single-host scenarios.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from chatbrowser import ChatUser, running_chromium
from chatclient import ChatSite
from playbook import changed_tasks, recap, run_playbook
from testhost import container_address, container_state, podman, podman_result
from waiting import wait_until

PREFIX = "chatstack-ha"
APP = f"{PREFIX}-app"
# Both load balancers are app hosts too: losing either leaves a whole site.
LB_HOSTS = [APP, f"{PREFIX}-lb2"]
REDIS_HOSTS = [f"{PREFIX}-redis1", f"{PREFIX}-redis2"]
# Sentinels run on both Redis hosts and, third, the app host (cluster.yml).
SENTINEL_HOSTS = [APP, *REDIS_HOSTS]
SHARD = "chat"
CA_CERTIFICATE = "/etc/chatstack-tls/ca.crt"
# The passwords, kept on the first Redis host (roles/redis, roles/secret).
APP_PASSWORD_FILE = "/etc/redis/chatstack.password"
REPLICATION_USER = "chatstack-replication"
DB_HOSTS = [f"{PREFIX}-db1", f"{PREFIX}-db2"]
SITE_HOSTS = [*LB_HOSTS, *REDIS_HOSTS, *DB_HOSTS]
# Podman's states of a stopped container.
STOPPED = ("exited", "stopped")
# As Debian's patroni@VERSION-main.service reads it (PostgreSQL 15 on Debian 12, 17 on 13).
PATRONICTL = ["sh", "-c", 'exec patronictl --config-file /etc/patroni/*-main.yml "$@"', "-"]
# Molecule's inventory, which converge used: one host per group.
CONVERGED = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "inventory")
# The grown site's, written by test_0_grow.py beside it.
INVENTORY = CONVERGED.with_name("grown")
# What test_0_grow.py adds to each group.
GROWTH = {
    "lb": [LB_HOSTS[1]],
    "app": [LB_HOSTS[1]],
    "redis": [REDIS_HOSTS[1]],
    "db": [DB_HOSTS[1]],
}


def address(container: str) -> str:
    """The container's address on the scenario's network."""
    return container_address(container, PREFIX)


def virtual_address() -> str:
    """The load balancers' shared address: .250 of their network (group_vars/ha.yml)."""
    subnet = podman(
        "network", "inspect", PREFIX, "--format", "{{range .Subnets}}{{.Subnet}}{{end}}"
    )
    return subnet.rsplit(".", 1)[0] + ".250"


def redis_cli(container: str, password: str, port: int, *command: str, user: str = "") -> list[str]:
    """redis-cli's raw answer lines, run on the container against its own address, over TLS."""
    login = ["--user", user] if user else []
    return podman(
        "exec", "-e", f"REDISCLI_AUTH={password}", container,
        "redis-cli", "--raw", "--no-auth-warning", "--tls", "--cacert", CA_CERTIFICATE,
        "-h", address(container), "-p", str(port), *login, *command,
    ).splitlines()  # fmt: skip


def role_of(host: str, replication_password: str) -> list[str]:
    """ROLE's lines: ["slave", master address, port, link state, ...] or ["master", ...]."""
    return redis_cli(host, replication_password, 6379, "ROLE", user=REPLICATION_USER)


def wait_replicating(replica: str, master: str, replication_password: str) -> None:
    """Waits until `replica` is linked to `master` as its replica."""
    wait_until(
        lambda: (
            role_of(replica, replication_password)[:4]
            == ["slave", address(master), "6379", "connected"]
        ),
        60,
        f"{replica} replicating the master {master}",
    )


def host_left_down(hosts: list[str], states: tuple[str, ...], by: str) -> str:
    """The one host of `hosts` in one of Podman's `states`, as the test `by` left it."""
    found = {host: container_state(host) for host in hosts}
    down = [host for host, state in found.items() if state in states]
    assert len(down) == 1, f"{by} left no host of {hosts} down: {found}"
    return down[0]


@pytest.fixture(scope="session")
def site_addresses() -> dict[str, str]:
    """Each host's address, taken while all run: a stopped container shows none."""
    return {host: address(host) for host in SITE_HOSTS}


@pytest.fixture(scope="session")
def app_password() -> str:
    return podman("exec", REDIS_HOSTS[0], "cat", APP_PASSWORD_FILE)


@pytest.fixture(scope="session")
def replication_password() -> str:
    return podman("exec", REDIS_HOSTS[0], "cat", f"/etc/redis/{REPLICATION_USER}.password")


def ask(sentinel: str, app_password: str) -> str:
    """The sentinel's answer: the shard's master as host:port, or "" if it has none."""
    lines = redis_cli(sentinel, app_password, 26379, "SENTINEL", "get-master-addr-by-name", SHARD)
    return ":".join(lines)


def master_of(app_password: str, among: list[str] = SENTINEL_HOSTS) -> str:
    """The Redis host the sentinels `among` agree is master (waiting for them to agree)."""

    def agreed():
        answers = {ask(sentinel, app_password) for sentinel in among}
        return answers.pop() if len(answers) == 1 else None

    master = wait_until(agreed, 60, "the sentinels agreeing on one master").rsplit(":", 1)[0]
    by_address = {address(host): host for host in REDIS_HOSTS}
    assert master in by_address, f"the sentinels name no Redis host of the shard: {master}"
    return by_address[master]


@pytest.fixture(scope="session")
def site() -> ChatSite:
    """The public site, at the load balancers' shared address (its name in DNS)."""
    pem = podman("exec", APP, "cat", "/etc/ssl/certs/chatstack.crt")
    return ChatSite(f"https://{virtual_address()}", ssl.create_default_context(cadata=pem))


@pytest.fixture
def new_users(site):
    """Signs up `count` new accounts, each with its own session."""

    def make(count: int) -> list:
        users = []
        for _ in range(count):
            user = site.session()
            user.signup(f"t{uuid.uuid4().hex[:12]}")
            users.append(user)
        return users

    return make


@pytest.fixture(scope="session")
def chromium():
    with running_chromium() as browser:
        yield browser


@pytest.fixture
def person(chromium, site, new_users) -> ChatUser:
    """Someone chatting in a real browser, signed in as a new account."""
    account = new_users(1)[0]
    user = ChatUser(chromium, site.base_url, account.username)
    user.adopt_session(account.session_key)
    yield user
    user.close()


def patroni_members(among: list[str] = DB_HOSTS) -> dict[str, dict]:
    """Patroni's view of its cluster, {member: patronictl list's row}, from the first
    of `among` that answers; {} if none does."""
    for host in among:
        listing = podman_result("exec", host, *PATRONICTL, "list", "--format", "json", timeout=30)
        if listing.returncode == 0:
            return {row["Member"]: row for row in json.loads(listing.stdout)}
    return {}


def primary_of(among: list[str] = DB_HOSTS) -> str:
    """The db host Patroni runs as the one primary (waiting for one)."""

    def one_leader():
        leaders = [
            name
            for name, row in patroni_members(among).items()
            if row["Role"] == "Leader" and row["State"] == "running"
        ]
        return leaders[0] if len(leaders) == 1 else None

    return wait_until(one_leader, 90, "Patroni running one primary")


def following(replica: str) -> bool | None:
    """True once `replica` replays the primary's stream with no lag, by Patroni and PostgreSQL."""
    row = patroni_members().get(replica, {})
    return (
        row.get("Role") == "Replica"
        and row.get("State") in ("running", "streaming")
        and row.get("Lag in MB") == 0
        and psql(replica, "SELECT pg_is_in_recovery()") == "t"
    ) or None


def psql(host: str, sql: str, database: str = "chatstack") -> str:
    """psql's answer on the host, as the postgres superuser over the local socket; "" on error."""
    result = podman_result(
        "exec", "--user", "postgres", host,
        "psql", "-XAtq", "-d", database, "-c", sql,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else ""


def holders() -> list[str]:
    """The running load balancers that hold the shared address."""
    shared = f" {virtual_address()}/"
    return [
        host
        for host in LB_HOSTS
        if container_state(host) == "running"
        and shared in podman("exec", host, "ip", "-o", "-4", "address", "show")
    ]


def holder() -> str:
    """The one load balancer holding the shared address (waiting for one)."""
    return wait_until(
        lambda: len(found := holders()) == 1 and found[0],
        30,
        "one load balancer holding the shared address",
    )


def rerun_site(tmp_path: Path, run: str, hosts: list[str]) -> tuple[dict[str, int], list[str]]:
    """site.yml once more, which must succeed: the changed count of each of `hosts`, and
    each task that changed something (with its host)."""
    (tmp_path / run).mkdir()
    result, seconds = run_playbook(INVENTORY, tmp_path / run)
    print(f"{run} rerun of site.yml: {seconds:.0f}s")
    assert result.returncode == 0, result.stdout[-6000:]
    counts = {host: recap(result.stdout, host)["changed"] for host in hosts}
    return counts, changed_tasks(result.stdout)
