"""Running the app as on a server: real Daphne processes, a database file, and
WebSocket clients signed in through Django sessions."""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

APP_DIR = Path(__file__).resolve().parent.parent
APP = "chatstack.asgi:application"
T = TypeVar("T")

SIGN_IN = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
cookies = {}
for name in NAMES:
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


def sign_in(environment: dict, *names: str) -> dict[str, str]:
    """New accounts `names`, each with the session id of a login."""
    output = manage(environment, "shell", "-c", f"NAMES = {list(names)!r}" + SIGN_IN)
    return json.loads(output.splitlines()[-1])


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
