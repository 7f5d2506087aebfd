"""Channel-layer helpers for code outside the consumers."""

import contextlib
from collections.abc import AsyncIterator

from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer


@contextlib.asynccontextmanager
async def private_layer() -> AsyncIterator:
    """A channel layer of its own, closed afterwards.

    The shared one keeps per-event-loop state that a caller in a fresh loop
    (a WSGI request, a management command: async_to_sync) would leave behind,
    and the pub/sub layer never unsubscribes a channel that received a message.
    """
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        yield layer
    finally:
        if isinstance(layer, RedisChannelLayer):
            await layer.close_pools()
        elif isinstance(layer, RedisPubSubChannelLayer):
            await layer.flush()
