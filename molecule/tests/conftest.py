"""Fixtures for the converged-host tests.

Run by Molecule's testinfra verifier, or directly:
    pytest --hosts=podman://chatstack-molecule-debian12 molecule/tests
The host is a Podman container; its published HTTPS port is looked up with
`podman port`, so the tests reach Nginx the way a browser does.

Tests marked `destructive` kill services and restart or destroy the host; they
are skipped unless --destructive is given (the resilience scenario does).
"""

import ssl
import uuid

import pytest
from chatbrowser import ARTIFACTS, ChatUser, running_chromium
from chatclient import ChatSite, sessions_made_on
from testhost import published_https_url

# (what, seconds) for every recovery or latency measured in this run, printed at the end.
TIMINGS: list[tuple[str, float]] = []


def pytest_addoption(parser):
    parser.addoption(
        "--destructive",
        action="store_true",
        help="also run tests that kill services and restart or destroy the host",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "destructive: kills services or restarts the host (needs --destructive)"
    )
    config.addinivalue_line("markers", "destroys_host: removes the host under test; runs last")


def pytest_collection_modifyitems(config, items):
    # Stable: every other test keeps its order, and finds the host still there.
    items.sort(key=lambda item: "destroys_host" in item.keywords)
    if config.getoption("--destructive"):
        return
    skip = pytest.mark.skip(reason="destructive: run with --destructive on a throwaway host")
    for item in items:
        if "destructive" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    lines = [f"{what}: {seconds:.2f}s" for what, seconds in TIMINGS]
    terminalreporter.section("timings")
    for line in lines:
        terminalreporter.write_line(line)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def record_time():
    def record(what: str, seconds: float) -> None:
        TIMINGS.append((what, seconds))
        print(f"{what}: {seconds:.2f}s")

    return record


@pytest.fixture(scope="module")
def container(host) -> str:
    """The name of the Podman container under test."""
    return host.backend.get_hostname()


@pytest.fixture
def debian12_container(container) -> str:
    """For tests whose subject does not depend on the Debian release: run them once."""
    if "debian12" not in container:
        pytest.skip("does not depend on the Debian release; runs on the Debian 12 host")
    return container


@pytest.fixture(scope="module")
def https_base_url(container) -> str:
    return published_https_url(container)


@pytest.fixture(scope="module")
def tls_context(host) -> ssl.SSLContext:
    """Trust exactly the host's self-signed certificate, nothing else."""
    pem = host.file("/etc/ssl/certs/chatstack.crt").content_string
    context = ssl.create_default_context(cadata=pem)
    return context


@pytest.fixture(scope="module")
def site(https_base_url, tls_context) -> ChatSite:
    return ChatSite(https_base_url, tls_context)


@pytest.fixture
def new_username() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


# Module scope: Playwright's sync API runs an event loop, and the asyncio tests
# of other modules need it gone.
@pytest.fixture(scope="module")
def chromium():
    with running_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def chat_user(host, chromium, https_base_url):
    """Makes people, each in a browser context of its own, signed in with an account made
    on the host -- or, with sign_up=True, through the sign-up form. The form's per-address
    rate limit is for people: a test run making dozens of accounts from one address
    would meet it, sooner on a faster machine."""
    users = []

    def make(sign_up: bool = False, locale: str = "en-US") -> ChatUser:
        user = ChatUser(chromium, https_base_url, f"t{uuid.uuid4().hex[:12]}", locale)
        users.append(user)
        if sign_up:
            user.signup()
        else:
            user.adopt_session(sessions_made_on(host, [user.username])[user.username])
        return user

    yield make
    for user in users:
        user.close()
