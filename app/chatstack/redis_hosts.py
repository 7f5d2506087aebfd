"""How every Redis client of the app reaches one shard.

A shard is one Redis server (its URL) or, where Redis Sentinel watches it, a
master that moves to a replica when its host dies: the URL then names the
master instead of a host, ``redis[s]://user:password@MASTER_NAME/DB?options``,
and the client asks the sentinels where that master is now, again after every
lost connection. The entry is what channels_redis' ``create_pool`` takes, so
the channel layer and the app's own clients follow the same master.
"""

import asyncio
import socket

from channels_redis.utils import create_pool
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# Sentinel answers within milliseconds or not at all. One that does not is
# asked once, not again: redis-py's default retries (four attempts with backoff)
# kept the app asking a sentinel on the frozen master's host for a minute
# before it asked the next, the whole time chat was down.
SENTINEL_TIMEOUT_SECONDS = 2
SENTINEL_RETRY = Retry(NoBackoff(), 0)
# A master whose host died sends no reset: a subscribed connection would wait
# for messages forever and a command for its whole read timeout. TCP keepalive
# finds an idle dead peer and TCP_USER_TIMEOUT one that does not acknowledge
# what was sent, within seconds, so the client asks the sentinels again.
DEAD_PEER_OPTIONS = {
    "socket_keepalive": True,
    "socket_keepalive_options": {
        socket.TCP_KEEPIDLE: 2,
        socket.TCP_KEEPINTVL: 1,
        socket.TCP_KEEPCNT: 3,
        socket.TCP_USER_TIMEOUT: 5000,
    },
}
# A frozen host (a paused VM or container, a stopped process) is worse: its
# kernel still acknowledges everything, so no socket option notices it. A
# command then fails after its read timeout, but the channel layer's
# subscribed connection only polls for messages and never waits on a reply:
# redis-py's health check PINGs it without ever missing the PONG, and the
# layer listens to the dead master for good while everything is published on
# the new one. MasterConnection gives up on a connection whose request has had
# no answer for this long while it was polled; a PING every few seconds on an
# idle connection makes sure there is such a request.
UNANSWERED_SECONDS = 5
HEALTH_CHECK_SECONDS = 2


class MasterConnection(SentinelManagedConnection):
    """A connection to a shard's master that notices the master's host froze.

    Closing it makes its owner reconnect, to where the sentinels now say the
    master is (a subscriber subscribes again).
    """

    # When the oldest request still without an answer was sent (event loop time).
    unanswered_since: float | None = None

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        if not self.is_connected:
            # redis-py (8.1) reconnects here to the address the connection had,
            # skipping the sentinels: every retry of a command would go back
            # to the dead master.
            await self.connect()
        await super().send_packed_command(command, check_health)
        if self.unanswered_since is None:
            self.unanswered_since = asyncio.get_running_loop().time()

    # redis-py's signature, timeout included.
    async def read_response(self, disable_decoding: bool = False, timeout=None, **kwargs):  # noqa: ASYNC109
        response = await super().read_response(disable_decoding, timeout, **kwargs)
        # Only a poll (a read with its own timeout) returns None for "nothing
        # yet"; a command's None is Redis' nil answer.
        if timeout is None or response is not None:
            self.unanswered_since = None
        elif (
            self.unanswered_since is not None
            and asyncio.get_running_loop().time() - self.unanswered_since > UNANSWERED_SECONDS
        ):
            await self.disconnect()
            raise RedisConnectionError(
                f"{self.host}:{self.port} answered nothing for {UNANSWERED_SECONDS} s"
            )
        return response

    async def disconnect(self, *args, **kwargs) -> None:
        self.unanswered_since = None
        await super().disconnect(*args, **kwargs)


class MasterSSLConnection(MasterConnection, SSLConnection):
    pass


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Parses "host:port,host:port" (IPv6 hosts in brackets); ValueError names a bad item."""
    sentinels = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    return sentinels


def host_entry(url: str, sentinels: list[tuple[str, int]], **options) -> dict:
    """The channels_redis host entry of the shard at url, with options for its connections."""
    if not sentinels:
        return {"address": url, **options}
    connection = parse_url(url)
    tls = connection.pop("connection_class", None) is SSLConnection
    master_name = connection.pop("host")
    connection.pop("port", None)
    # The sentinels ask for the app's password (their requirepass) without a user
    # name, over the same TLS as the shard.
    sentinel = {
        "password": connection.get("password"),
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "retry": SENTINEL_RETRY,
    }
    if tls:
        sentinel.update(
            {key: value for key, value in connection.items() if key.startswith("ssl_")}, ssl=True
        )
    return {
        "sentinels": sentinels,
        "master_name": master_name,
        "sentinel_kwargs": sentinel,
        **connection,
        **DEAD_PEER_OPTIONS,
        **options,
        "connection_class": MasterSSLConnection if tls else MasterConnection,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def client(entry: dict) -> Redis:
    """A redis.asyncio client of a host entry's shard.

    It owns its pool: close it with ``aclose(close_connection_pool=True)``.
    """
    return Redis(connection_pool=create_pool(entry))
