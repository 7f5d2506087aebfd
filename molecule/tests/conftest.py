"""Fixtures for the converged-host tests.

Run by Molecule's testinfra verifier, or directly:
    pytest --hosts=podman://chatstack-molecule-debian12 molecule/tests
The host is a Podman container; its published HTTPS port is looked up with
`podman port`, so the tests reach Nginx the way a browser does.
"""

import ssl
import subprocess
import uuid

import pytest
from chatclient import ChatSite


def container_name(host) -> str:
    return host.backend.get_hostname()


@pytest.fixture(scope="module")
def https_base_url(host) -> str:
    name = container_name(host)
    mapping = subprocess.run(
        ["podman", "port", name, "443/tcp"], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    return f"https://{mapping}"


@pytest.fixture(scope="module")
def tls_context(host) -> ssl.SSLContext:
    """Trust exactly the host's self-signed certificate, nothing else."""
    pem = host.file("/etc/ssl/certs/chatstack.crt").content_string
    context = ssl.create_default_context(cadata=pem)
    return context


@pytest.fixture
def site(https_base_url, tls_context) -> ChatSite:
    return ChatSite(https_base_url, tls_context)


@pytest.fixture
def new_username() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
