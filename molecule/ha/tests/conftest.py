"""Fixtures for the ha scenario: one sentinel-managed Redis shard of two hosts.

These tests take no `host` fixture: each runs once for the whole site and
names the hosts it talks to. Run by Molecule's testinfra verifier, or directly:
    pytest molecule/ha/tests
"""

import ssl
import sys
import uuid
from pathlib import Path

import pytest

# The shared helpers of the single-host scenarios.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from chatbrowser import ChatUser, running_chromium
from chatclient import ChatSite
from testhost import container_address, podman
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


def role_of(host: str, replication_password: str) -> list[str]:
    """ROLE's lines: ["slave", master address, port, link state, ...] or ["master", ...]."""
    return redis_cli(host, replication_password, 6379, "ROLE", user=REPLICATION_USER)


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
