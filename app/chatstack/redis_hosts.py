"""How every Redis client of the app reaches one shard.

A shard is one Redis server (its URL) or, where Redis Sentinel watches it, a
master that moves to a replica when its host dies: the URL then names the
master instead of a host, ``redis[s]://user:password@MASTER_NAME/DB?options``,
and the client asks the sentinels where that master is now, again after every
lost connection. The entry is what channels_redis' ``create_pool`` takes, so
the channel layer and the app's own clients follow the same master.
"""

import socket

from channels_redis.utils import create_pool
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url

# Sentinel answers within milliseconds or not at all.
SENTINEL_TIMEOUT_SECONDS = 5
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
    }
    if tls:
        sentinel.update(
            {key: value for key, value in connection.items() if key.startswith("ssl_")}, ssl=True
        )
        connection["ssl"] = True
    return {
        "sentinels": sentinels,
        "master_name": master_name,
        "sentinel_kwargs": sentinel,
        **connection,
        **DEAD_PEER_OPTIONS,
        **options,
    }


def client(entry: dict) -> Redis:
    """A redis.asyncio client of a host entry's shard.

    It owns its pool: close it with ``aclose(close_connection_pool=True)``.
    """
    return Redis(connection_pool=create_pool(entry))
