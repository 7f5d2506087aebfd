"""Connections made from inside a cluster host's network namespace.

The hosts' firewalls admit peers by address, so a test that wants to talk to
app1's Daphne as the load balancer does, or to show that the load balancer
cannot reach Redis, must connect from that host's network namespace. nsenter
moves only the network namespace: the controller's Python, files and unix
sockets stay usable, which is how a relay hands a namespaced TCP connection
to a client in the test process.
"""

import contextlib
import subprocess
import sys
from pathlib import Path

from testhost import podman

RELAY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def main(path, host, port):
    async def handle(reader, writer):
        target_reader, target_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            pipe(reader, target_writer), pipe(target_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_unix_server(handle, path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as error:
    print(type(error).__name__)
else:
    print("connected")
"""

EXCHANGE = """
import socket, ssl, sys
address, port, payload, ca, name = sys.argv[1:]
port, payload = int(port), bytes.fromhex(payload)
try:
    sock = socket.create_connection((address, port), timeout=5)
    if ca:
        sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=name)
    sock.sendall(payload)
    print(sock.recv(200).decode(errors="replace").split("\\r\\n")[0] or "closed")
except OSError as error:
    print(type(error).__name__)
"""


def container_pid(container: str) -> str:
    return podman("inspect", "--format", "{{.State.Pid}}", container)


def in_namespace(container: str, *command: str) -> list[str]:
    return ["nsenter", "--target", container_pid(container), "--net", *command]


def connect_outcome(container: str, address: str, port: int, timeout: float = 3.0) -> str:
    """ "connected", or the error a TCP connect from the container's namespace ends in."""
    command = in_namespace(container, sys.executable, "-c", PROBE, address, str(port), str(timeout))
    return subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=timeout + 10
    ).stdout.strip()


@contextlib.contextmanager
def relay(container: str, address: str, port: int, socket_path: Path):
    """Relays connections to `socket_path` to address:port, as made from `container`."""
    command = in_namespace(
        container, sys.executable, "-c", RELAY, str(socket_path), address, str(port)
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        yield str(socket_path)
    finally:
        process.terminate()
        process.wait(timeout=10)


def exchange(
    container: str, address: str, port: int, payload: bytes, ca_file: str = "", name: str = ""
) -> str:
    """The first line of the answer to `payload` sent from the container's namespace,
    over TLS verified against `ca_file` and `name` when given; "closed" or the error
    when there is none."""
    command = in_namespace(
        container, sys.executable, "-c", EXCHANGE, address, str(port), payload.hex(), ca_file, name
    )
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    return result.stdout.strip()
