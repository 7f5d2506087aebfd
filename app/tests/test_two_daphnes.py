"""Two real Daphne processes sharing Redis and a database, as on one app host or
two: the per-account limits and revocations must hold across them."""

import asyncio
import json
import os

import pytest

from chatstack.chat.protocol import CLOSE_LIMITED, CLOSE_REVOKED

from .conftest import _free_port, url_of
from .daphneutil import APP_DIR, manage, sign_in, start_daphne

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

MAX_CONNECTIONS = 4
RATE_LIMIT = 5


@pytest.fixture(scope="module")
def site(redis_server, tmp_path_factory):
    """Two Daphne processes of the app; yields their ports, sessions and environment.

    Shared by the tests here, which use accounts of their own.
    """
    tmp_path = tmp_path_factory.mktemp("two-daphnes")
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CHATSTACK_")},
        "PYTHONPATH": str(APP_DIR),
        "DJANGO_SETTINGS_MODULE": "chatstack.settings",
        "CHATSTACK_SECRET_KEY": "two-daphnes-" + "k" * 40,
        "CHATSTACK_ALLOWED_HOSTS": "localhost",
        "CHATSTACK_SECURE": "false",
        "CHATSTACK_DEBUG": "true",
        "CHATSTACK_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "CHATSTACK_REDIS_URLS": url_of(redis_server),
        "CHATSTACK_ACCOUNT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "CHATSTACK_RATE_LIMIT_COUNT": str(RATE_LIMIT),
        "CHATSTACK_RATE_LIMIT_SECONDS": "60",
        "CHATSTACK_LOG_LEVEL": "WARNING",
    }
    manage(environment, "migrate", "-v0")
    cookies = sign_in(environment, "mallory", "alice")
    ports = [_free_port(), _free_port()]
    processes = []
    try:
        for port in ports:
            processes.append(start_daphne(environment, port, tmp_path))
        yield ports, cookies, environment
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def chat_socket(cookies: dict, user: str, port: int, room: str = "general"):
    return connect(
        f"ws://localhost:{port}/ws/chat/{room}/",
        origin="http://localhost",
        additional_headers={"Cookie": f"sessionid={cookies[user]}"},
        open_timeout=10,
    )


async def frame(ws, seconds: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), seconds))


async def close_code(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code


async def test_one_account_gets_one_budget_across_two_daphnes(site):
    """A script with many sockets spread over processes gets no more than a person."""
    ports, cookies, environment = site
    held, refused = [], []
    for index in range(MAX_CONNECTIONS + 3):
        ws = await chat_socket(cookies, "mallory", ports[index % 2])
        first = await frame(ws)
        if first["type"] == "history":
            held.append(ws)
        else:
            assert "Too many open chat windows" in first["error"]
            refused.append(await close_code(ws))
    assert len(held) == MAX_CONNECTIONS
    assert refused == [CLOSE_LIMITED] * 3

    for index in range(3 * RATE_LIMIT):
        await held[index % len(held)].send(json.dumps({"message": f"m{index}"}))
    errors = 0
    for ws in held:
        try:
            # Until the socket has been quiet for a moment.
            while True:
                errors += (await frame(ws, seconds=0.5))["type"] == "error"
        except TimeoutError:
            pass
    assert errors == 2 * RATE_LIMIT
    stored = manage(
        environment,
        "shell",
        "-c",
        "from chatstack.chat.models import Message; print(Message.objects.count())",
    )
    assert int(stored.splitlines()[-1]) == RATE_LIMIT
    for ws in held:
        await ws.close()


async def test_deactivation_closes_sockets_on_both_daphnes(site):
    ports, cookies, environment = site
    sockets = [await chat_socket(cookies, "alice", port) for port in ports]
    for ws in sockets:
        assert (await frame(ws))["type"] == "history"

    # From a third process, as an admin's request or command would.
    await asyncio.to_thread(
        manage,
        environment,
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "alice = User.objects.get(username='alice'); alice.is_active = False; alice.save()",
    )

    for ws in sockets:
        assert await close_code(ws) == CLOSE_REVOKED
