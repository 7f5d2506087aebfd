"""Django settings of the benchmark's seed profile, installed by bench/seed.yml.

The app's own settings, with Redis used the way the seed's design used it:
channels_redis' defaults (capacity 100 queued messages, group expiry one day)
and redis-py's own pool cap of 100 connections per client. The socket
timeouts stay: without them redis-py 8 tears down idle consumers every 5 s,
a library change the seed never met.
"""

from chatstack import settings as _app

globals().update({name: getattr(_app, name) for name in dir(_app) if name.isupper()})

CHATSTACK_REDIS_OPTIONS = {
    key: value for key, value in _app.CHATSTACK_REDIS_OPTIONS.items() if key != "max_connections"
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {key: value for key, value in host.items() if key != "max_connections"}
                for host in _app.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
            ]
        },
    }
}
