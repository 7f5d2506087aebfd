import os
import shutil
import socket
import subprocess
import time

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from chatstack.asgi import application

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def layers_using(channel_layers: dict, url: str) -> dict:
    """CHANNEL_LAYERS with the Redis address replaced, keeping the connection options."""
    layer = channel_layers["default"]
    hosts = [{**layer["CONFIG"]["hosts"][0], "address": url}]
    return {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def env(monkeypatch):
    """A clean CHATSTACK_* environment with the required variables set."""
    for name in list(os.environ):
        if name.startswith("CHATSTACK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CHATSTACK_SECRET_KEY", "x" * 50)
    monkeypatch.setenv("CHATSTACK_ALLOWED_HOSTS", "chat.example.com")
    monkeypatch.setenv("CHATSTACK_SQLITE_PATH", "/srv/chatstack/db.sqlite3")
    return monkeypatch


@pytest.fixture(scope="session")
def redis_server():
    """A private, non-persistent redis-server wired into the channel layer and presence."""
    if not shutil.which(REDIS_SERVER):
        pytest.skip(f"{REDIS_SERVER} not found: install redis-server to run channel-layer tests")
    port = _free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    overrides = override_settings(
        CHANNEL_LAYERS=layers_using(settings.CHANNEL_LAYERS, url),
        CHATSTACK_PRESENCE_REDIS_URL=url,
    )
    overrides.enable()
    try:
        yield client
    finally:
        overrides.disable()
        client.close()
        process.terminate()
        process.wait(timeout=10)


def url_of(client: redis.Redis) -> str:
    """The URL other processes reach the test Redis at."""
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.fixture
def redis_client(redis_server):
    """The test Redis, emptied so no group, message or presence leaks between tests."""
    redis_server.flushdb()
    return redis_server


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(transactional_db):
    return get_user_model().objects.create_user("bob", password="bob-password")


def session_cookie_of(client: Client) -> bytes:
    """The Cookie header that carries the session of a logged-in test client."""
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return session_cookie_of(client)


@pytest.fixture
async def ws(redis_client):
    """Open WebSocket connections through the full ASGI stack; all are closed afterwards."""
    opened: list[WebsocketCommunicator] = []

    async def connect(
        user=None,
        room="lobby",
        origin="http://testserver",
        expect=True,
        cookie=None,
        app=application,
        headers=(),
    ):
        """A connection of `user` in a session of its own, or with the session `cookie`."""
        headers = [(b"host", b"testserver"), *headers]
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        if user is not None:
            cookie = await sync_to_async(_session_cookie)(user)
        if cookie is not None:
            headers.append((b"cookie", cookie))
        communicator = WebsocketCommunicator(app, f"/ws/chat/{room}/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        opened.append(communicator)
        assert connected is expect
        return communicator

    yield connect
    for communicator in opened:
        # A test may have ended the application itself.
        if not communicator.future.done():
            await communicator.disconnect()
