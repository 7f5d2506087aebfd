"""The newest message id of every room, in Redis.

A message the channel layer lost is noticed when the next one in the room
arrives (consumers.ChatConsumer.deliver); a room's last message has no next
one, so connections compare what they were sent with this on every heartbeat.
"""

from .presence import redis_client

KEY = "chatstack:latest"


async def record(room: str, message_id: int) -> None:
    # GT: posts finishing out of order never move a room's newest id back.
    await redis_client().zadd(KEY, {room: message_id}, gt=True)


async def newest(room: str) -> int:
    """The newest message id recorded for the room; 0 if none."""
    score = await redis_client().zscore(KEY, room)
    return int(score or 0)
