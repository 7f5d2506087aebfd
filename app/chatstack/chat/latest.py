"""The newest message id of every room, in Redis.

A message the channel layer lost is noticed when the next one in the room
arrives (consumers.ChatConsumer.deliver); a room's last message has no next
one, so connections compare what they were sent with this on every heartbeat.

One key per room, expiring a day after the room's last message: anyone can
name a new room, so a single set of every room ever used would grow without
bound (and, without a TTL, never be evicted). A comparison against an expired
key finds no gap, which is right: a day after its last message every open
connection of the room has long been sent it.
"""

from .presence import redis_client

# Earlier releases kept every room in one sorted set; `chatstack-manage prune` removes it.
LEGACY_KEY = "chatstack:latest"
TTL_SECONDS = 24 * 3600

# Never moves a room's newest id back: posts may finish out of order. Running it
# twice (redis-py retries a command whose reply was lost) leaves the same value.
_RECORD = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
"""


def key(room: str) -> str:
    return f"chatstack:latest:{room}"


async def record(room: str, message_id: int) -> None:
    await redis_client().register_script(_RECORD)(keys=[key(room)], args=[message_id, TTL_SECONDS])


async def newest(room: str) -> int:
    """The newest message id recorded for the room; 0 if none."""
    return int(await redis_client().get(key(room)) or 0)
