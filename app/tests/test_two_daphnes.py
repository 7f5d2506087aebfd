"""Two real Daphne processes sharing Redis and a database, as on one app host or
two: the per-account limits and revocations must hold across them."""

import asyncio
import json

import pytest

from chatstack.chat.protocol import CLOSE_LIMITED, CLOSE_REVOKED

from .conftest import url_of
from .daphneutil import (
    chat_socket,
    close_code,
    daphnes,
    environment_for,
    frame,
    manage,
    sign_in,
)

MAX_CONNECTIONS = 4
RATE_LIMIT = 5


@pytest.fixture(scope="module")
def site(redis_server, tmp_path_factory):
    """Two Daphne processes of the app; yields their ports, sessions and environment.

    Shared by the tests here, which use accounts of their own.
    """
    tmp_path = tmp_path_factory.mktemp("two-daphnes")
    environment = environment_for(
        tmp_path,
        url_of(redis_server),
        CHATSTACK_ACCOUNT_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        CHATSTACK_RATE_LIMIT_COUNT=str(RATE_LIMIT),
        CHATSTACK_RATE_LIMIT_SECONDS="60",
    )
    cookies = sign_in(environment, "mallory", "alice")
    with daphnes(environment, 2, tmp_path) as ports:
        yield ports, cookies, environment


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
