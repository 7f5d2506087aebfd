"""Fixtures for the cluster scenario: five hosts, reached from the controller.

These tests take no `host` fixture: each runs once for the whole cluster and
names the hosts it talks to. Run by Molecule's testinfra verifier, or directly:
    pytest molecule/cluster/tests
"""

import ssl
import sys
from pathlib import Path

import pytest

# The shared helpers of the single-host scenarios (chat client, playbook runner).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from chatclient import ChatSite
from testhost import container_address, podman

LB = "chatstack-cluster-lb"
APP_HOSTS = ["chatstack-cluster-app1", "chatstack-cluster-app2"]
REDIS = "chatstack-cluster-redis"
DB = "chatstack-cluster-db"
# The site CA's certificate on every host, and the name every app server's
# certificate carries (playbooks/group_vars/all/cluster.yml).
CA_CERTIFICATE = "/etc/chatstack-tls/ca.crt"
APP_TLS_NAME = "chatstack-app"
# The inventory of molecule.yml, for playbooks the tests run.
GROUPS = {"lb": [LB], "app": APP_HOSTS, "redis": [REDIS], "db": [DB], "monitoring": [LB]}


def address(container: str) -> str:
    """The container's address on the cluster's network."""
    return container_address(container, "chatstack-cluster")


@pytest.fixture(scope="session")
def site() -> ChatSite:
    """The public site, through the load balancer's published port."""
    pem = podman("exec", LB, "cat", "/etc/ssl/certs/chatstack.crt")
    base_url = "https://" + podman("port", LB, "443/tcp").split()[0]
    return ChatSite(base_url, ssl.create_default_context(cadata=pem))


@pytest.fixture(scope="session")
def ca_pem() -> str:
    """The site CA's certificate, which every host of the cluster trusts."""
    return podman("exec", LB, "cat", CA_CERTIFICATE)


@pytest.fixture(scope="session")
def app_tls(ca_pem) -> dict:
    """Connection options for talking to an app server as Nginx does: TLS, verified."""
    return {"ssl": ssl.create_default_context(cadata=ca_pem), "server_hostname": APP_TLS_NAME}
