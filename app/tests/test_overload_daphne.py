"""A client that stops reading, against a real Daphne: only there does what it is
sent pile up (in Twisted's transport), and only there can the consumer see it."""

import asyncio
import json
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from chatstack.chat.protocol import CLOSE_TOO_SLOW

from .conftest import url_of
from .daphneutil import chat_socket, daphnes, environment_for, frame, sign_in

SLOW_READER_SECONDS = 1
# Large messages, so that few fill the loopback socket buffers (megabytes) and
# Twisted's 64 KiB; MAX_POSTS of them fill those many times over.
MESSAGE_LENGTH = 50_000
MAX_POSTS = 1000


@pytest.fixture(scope="module")
def site(redis_server, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("slow-reader")
    environment = environment_for(
        tmp_path,
        url_of(redis_server),
        CHATSTACK_SLOW_READER_SECONDS=str(SLOW_READER_SECONDS),
        CHATSTACK_MESSAGE_MAX_LENGTH=str(MESSAGE_LENGTH),
        # The newest message is all a reconnect needs to show it missed nothing.
        CHATSTACK_HISTORY_SIZE="1",
        # One account posts as fast as the server stores.
        CHATSTACK_RATE_LIMIT_COUNT=str(10 * MAX_POSTS),
    )
    cookies = sign_in(environment, "talker", "stuck")
    with daphnes(environment, 1, tmp_path) as (port,):
        yield port, cookies


def cut_off(port: int) -> float:
    """chatstack_connections_too_slow_total, as the process serves it at /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "chatstack_connections_too_slow_total":
                return sample.value
    raise AssertionError("chatstack_connections_too_slow_total is not exported")


async def echo(ws, cid: str) -> dict:
    while True:
        received = await frame(ws)
        if received.get("cid") == cid:
            assert received["type"] == "message", received
            return received


async def test_a_client_that_stops_reading_is_cut_off_and_catches_up(site):
    """A member whose device stopped reading must not make the server hold the
    room's traffic for it without bound: it is cut off (4008) while the room
    goes on, and on reconnect the history has the newest message."""
    port, cookies = site
    before = await asyncio.to_thread(cut_off, port)
    talker = await chat_socket(cookies, "talker", port)
    # A small receive window, and a client that stops taking frames off it after one.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    stuck = await chat_socket(cookies, "stuck", port, sock=sock, max_queue=1)

    text = "x" * MESSAGE_LENGTH
    started = time.monotonic()
    for posted in range(1, MAX_POSTS + 1):
        await talker.send(json.dumps({"message": text, "cid": f"t-{posted}"}))
        # The sender's own echo still comes: the room goes on.
        last = await echo(talker, f"t-{posted}")
        if posted % 5 == 0 and await asyncio.to_thread(cut_off, port) > before:
            break
    else:
        pytest.fail(f"a client that read nothing for {MAX_POSTS} messages was never cut off")
    print(f"cut off after {posted} posts of {MESSAGE_LENGTH} B, {time.monotonic() - started:.1f} s")

    ids = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received = await frame(stuck, seconds=10)
            if received["type"] == "message":
                ids.append(received["id"])
    assert ids == sorted(set(ids)), "the stuck client was sent a message twice or out of order"
    # Past the close handshake's 1 s Daphne drops the connection instead: the page
    # reconnects after either.
    assert closed.value.rcvd is None or closed.value.rcvd.code == CLOSE_TOO_SLOW

    again = await chat_socket(cookies, "stuck", port)
    history = await frame(again)
    assert history["type"] == "history"
    assert [m["id"] for m in history["messages"]] == [last["id"]], (
        "the reconnected client missed messages"
    )
    await again.close()
    await talker.close()
