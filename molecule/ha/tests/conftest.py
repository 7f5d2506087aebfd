"""Fixtures for the ha scenario: one sentinel-managed Redis shard of two hosts.

These tests take no `host` fixture: each runs once for the whole site and
names the hosts it talks to. Run by Molecule's testinfra verifier, or directly:
    pytest molecule/ha/tests
"""

import sys
from pathlib import Path

import pytest

# The shared helpers of the single-host scenarios.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from testhost import container_address, podman

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


@pytest.fixture(scope="session")
def app_password() -> str:
    return podman("exec", REDIS_HOSTS[0], "cat", APP_PASSWORD_FILE)


@pytest.fixture(scope="session")
def replication_password() -> str:
    return podman("exec", REDIS_HOSTS[0], "cat", f"/etc/redis/{REPLICATION_USER}.password")
