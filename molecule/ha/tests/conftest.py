"""Fixtures for the ha scenario: one sentinel-managed Redis shard of two hosts,
and PostgreSQL on two hosts under Patroni.

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

from chatclient import ChatSite
from playbook import recap, run_playbook
from testhost import container_address, podman, podman_result
from waiting import wait_until

PREFIX = "chatstack-ha"
APP = f"{PREFIX}-app"
REDIS_HOSTS = [f"{PREFIX}-redis1", f"{PREFIX}-redis2"]
# Sentinels run on both Redis hosts and, third, the app host (cluster.yml).
SENTINEL_HOSTS = [APP, *REDIS_HOSTS]
SHARD = "chat"
CA_CERTIFICATE = "/etc/chatstack-tls/ca.crt"
# The passwords, kept on the first Redis host (roles/redis, roles/secret).
APP_PASSWORD_FILE = "/etc/redis/chatstack.password"
REPLICATION_USER = "chatstack-replication"
DB_HOSTS = [f"{PREFIX}-db1", f"{PREFIX}-db2"]
# Debian 12's PostgreSQL 15, as Debian's patroni@15-main.service reads it.
PATRONICTL = ["patronictl", "--config-file", "/etc/patroni/15-main.yml"]
# The scenario's own inventory (host_vars with redis_shard), as converge used it.
INVENTORY = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "inventory")


def address(container: str) -> str:
    """The container's address on the scenario's network."""
    return container_address(container, PREFIX)


def redis_cli(container: str, password: str, port: int, *command: str, user: str = "") -> list[str]:
    """redis-cli's raw answer lines, run on the container against its own address, over TLS."""
    login = ["--user", user] if user else []
    return podman(
        "exec", "-e", f"REDISCLI_AUTH={password}", container,
        "redis-cli", "--raw", "--no-auth-warning", "--tls", "--cacert", CA_CERTIFICATE,
        "-h", address(container), "-p", str(port), *login, *command,
    ).splitlines()  # fmt: skip


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
    """The public site, through the load balancer's published port."""
    pem = podman("exec", APP, "cat", "/etc/ssl/certs/chatstack.crt")
    base_url = "https://" + podman("port", APP, "443/tcp").split()[0]
    return ChatSite(base_url, ssl.create_default_context(cadata=pem))


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


def psql(host: str, sql: str, database: str = "chatstack") -> str:
    """psql's answer on the host, as the postgres superuser over the local socket; "" on error."""
    result = podman_result(
        "exec", "--user", "postgres", host,
        "psql", "-XAtq", "-d", database, "-c", sql,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else ""


def rerun_site(tmp_path: Path, run: str, hosts: list[str]) -> dict[str, int]:
    """site.yml once more, which must succeed; the changed count of each of `hosts`."""
    (tmp_path / run).mkdir()
    result, seconds = run_playbook(INVENTORY, tmp_path / run)
    print(f"{run} rerun of site.yml: {seconds:.0f}s")
    assert result.returncode == 0, result.stdout[-6000:]
    return {host: recap(result.stdout, host)["changed"] for host in hosts}
