"""Real Daphne processes of the app, for tests of what only a real server shows."""

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from .conftest import _free_port

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

APP_DIR = Path(__file__).resolve().parent.parent
APP = "chatstack.asgi:application"
T = TypeVar("T")

SIGN_IN = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
cookies = {}
for name in %r:
    client = Client()
    client.force_login(get_user_model().objects.create_user(name))
    cookies[name] = client.cookies["sessionid"].value
print(json.dumps(cookies))
"""


def manage(environment: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "chatstack.manage", *args],
        env=environment,
        cwd=APP_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """check()'s first truthy result; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {result!r})")
        time.sleep(interval)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    def up() -> bool:
        assert process.poll() is None, f"the process meant to listen on {port} exited"
        return listening(port)

    wait_until(up, 30, f"listening on {port}")


def start_daphne(environment: dict, port: int, cwd: Path) -> subprocess.Popen:
    """A Daphne process of the app on 127.0.0.1:`port`, once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), APP],
        env=environment,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
    except AssertionError:
        process.kill()
        raise
    return process


def environment_for(tmp_path: Path, redis_url: str, **variables: str) -> dict:
    """A production-like environment with a database of its own and the Redis at
    `redis_url`, migrated; `variables` added."""
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CHATSTACK_")},
        "PYTHONPATH": str(APP_DIR),
        "DJANGO_SETTINGS_MODULE": "chatstack.settings",
        "CHATSTACK_SECRET_KEY": "real-daphne-" + "k" * 40,
        "CHATSTACK_ALLOWED_HOSTS": "localhost",
        "CHATSTACK_SECURE": "false",
        "CHATSTACK_DEBUG": "true",
        "CHATSTACK_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "CHATSTACK_REDIS_URLS": redis_url,
        "CHATSTACK_LOG_LEVEL": "WARNING",
        **variables,
    }
    manage(environment, "migrate", "-v0")
    return environment


def sign_in(environment: dict, *names: str) -> dict:
    """Session cookies of new accounts `names`, by name."""
    return json.loads(manage(environment, "shell", "-c", SIGN_IN % (names,)).splitlines()[-1])


@contextlib.contextmanager
def daphnes(environment: dict, count: int, cwd: Path) -> Iterator[list[int]]:
    """`count` Daphne processes of the app, listening; yields their ports."""
    ports = [_free_port() for _ in range(count)]
    processes = []
    try:
        for port in ports:
            processes.append(start_daphne(environment, port, cwd))
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def chat_socket(cookies: dict, user: str, port: int, room: str = "general", **options):
    return connect(
        f"ws://localhost:{port}/ws/chat/{room}/",
        origin="http://localhost",
        additional_headers={"Cookie": f"sessionid={cookies[user]}"},
        open_timeout=10,
        **options,
    )


async def frame(ws, seconds: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), seconds))


async def close_code(ws) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code
