"""Limits per account, shared by every socket, Daphne process and app host through Redis.

A limit kept in one consumer or one process is no limit: an account with
500 sockets, or sockets spread over several Daphne processes, multiplies it.
Each check is one Lua script, so concurrent checks from anywhere cannot both
take the last slot, and each reads the clock of the Redis server, so app hosts
whose clocks disagree still share one window.

Every key written here expires on its own: an account that goes quiet, or
whose sockets belonged to a process that died, leaves nothing behind.
"""

import uuid
from enum import StrEnum

from django.conf import settings

from .presence import redis_client

# Milliseconds on the Redis server's clock, unless ARGV[1] pins it (tests of
# window edges); every script takes it as its first argument.
_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A sliding window log: one member per accepted message, scored by its time.
# KEYS[1]: the account's log. ARGV: now, limit, window (ms), a unique member.
# A retried run (redis-py repeats a command whose reply was lost) re-adds the
# same member, so one message is never counted twice.
# Returns 0 (taken) or the milliseconds until the oldest leaves the window.
_TAKE_MESSAGE = (
    _NOW
    + """
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""
)

# The account's open sockets: members "<room> <channel name>" (room names have
# no spaces), scored by when they expire unless a heartbeat refreshes them.
# KEYS[1]: the account's sockets. ARGV: now, member, room, ttl (ms), max sockets, max rooms.
# Returns 0 (admitted), 1 (too many sockets) or 2 (too many rooms).
# A socket already counted is admitted again: redis-py retries a command whose
# reply was lost (settings.CHATSTACK_REDIS_OPTIONS), and the repeat must not
# refuse the socket its first run took the last place for.
_ADMIT_SOCKET = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  local members = redis.call('ZRANGE', KEYS[1], 0, -1)
  if #members >= tonumber(ARGV[5]) then
    return 1
  end
  local rooms, count = {}, 0
  for _, member in ipairs(members) do
    local room = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
    if not rooms[room] then
      rooms[room] = true
      count = count + 1
    end
  end
  if not rooms[ARGV[3]] and count >= tonumber(ARGV[6]) then
    return 2
  end
end
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""
)

# KEYS[1]: the account's sockets. ARGV: now, member, ttl (ms).
_REFRESH_SOCKET = (
    _NOW
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
"""
)


class Refusal(StrEnum):
    """Why a WebSocket was closed right after its handshake."""

    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_ROOMS = "too_many_rooms"


def _key(user_id: int, what: str) -> str:
    return f"chatstack:account:{user_id}:{what}"


async def _run(script: str, keys: list[str], args: list, now_ms: int | None) -> int:
    return await redis_client().register_script(script)(
        keys=keys, args=["" if now_ms is None else now_ms, *args]
    )


async def take_message(user_id: int, now_ms: int | None = None) -> float:
    """Counts one more message of the account, if it may post now.

    At most CHATSTACK_RATE_LIMIT_COUNT messages in any window of
    CHATSTACK_RATE_LIMIT_SECONDS, over all the account's sockets. Returns 0
    if the message was taken, or else the seconds until the next one can be:
    nothing can free a place sooner.
    """
    return await _take(
        user_id,
        "messages",
        settings.CHATSTACK_RATE_LIMIT_COUNT,
        settings.CHATSTACK_RATE_LIMIT_SECONDS,
        now_ms,
    )


# Pages of scrollback (of at most 100 messages) per account and window: far
# more than a person scrolls, and a script reading whole rooms in a loop is
# held to a few thousand messages a second over all its sockets.
HISTORY_PAGES_COUNT = 30
HISTORY_PAGES_SECONDS = 10


async def take_history_page(user_id: int, now_ms: int | None = None) -> float:
    """Counts one more `history before` request of the account, as take_message does."""
    return await _take(user_id, "history", HISTORY_PAGES_COUNT, HISTORY_PAGES_SECONDS, now_ms)


async def _take(user_id: int, what: str, count: int, seconds: float, now_ms: int | None) -> float:
    window_ms = int(seconds * 1000)
    wait_ms = await _run(
        _TAKE_MESSAGE, [_key(user_id, what)], [count, window_ms, uuid.uuid4().hex], now_ms
    )
    return wait_ms / 1000


class AccountSockets:
    """One socket's place among its account's open sockets.

    A socket counts until it is released or, if its process died, until three
    heartbeats have passed without a refresh.
    """

    def __init__(self, user_id: int, room: str, channel_name: str) -> None:
        self.key = _key(user_id, "sockets")
        self.room = room
        self.member = f"{room} {channel_name}"

    @staticmethod
    def ttl_ms() -> int:
        return int(3 * settings.CHATSTACK_HEARTBEAT_SECONDS * 1000)

    async def admit(self, now_ms: int | None = None) -> Refusal | None:
        """Counts this socket in, or says why the account may not open it."""
        result = await _run(
            _ADMIT_SOCKET,
            [self.key],
            [
                self.member,
                self.room,
                self.ttl_ms(),
                settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS,
                settings.CHATSTACK_ACCOUNT_MAX_ROOMS,
            ],
            now_ms,
        )
        return {0: None, 1: Refusal.TOO_MANY_CONNECTIONS, 2: Refusal.TOO_MANY_ROOMS}[result]

    async def refresh(self, now_ms: int | None = None) -> None:
        await _run(_REFRESH_SOCKET, [self.key], [self.member, self.ttl_ms()], now_ms)

    async def release(self) -> None:
        await redis_client().zrem(self.key, self.member)
