"""ASGI entry point (daphne): HTTP to Django (except /metrics), WebSockets to the chat consumer."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatstack.settings")
# Sets up Django (settings, app registry) before anything below imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chatstack.chat.language import WebsocketLocaleMiddleware  # noqa: E402
from chatstack.chat.overload import BackpressureMiddleware  # noqa: E402
from chatstack.chat.routing import websocket_urlpatterns  # noqa: E402
from chatstack.metrics_endpoint import MetricsEndpoint  # noqa: E402

application = ProtocolTypeRouter(
    {
        # /metrics is answered here, not by Django, so that each daphne process
        # reports its own metrics (and uWSGI serves none).
        "http": MetricsEndpoint(django_asgi_app),
        # Browsers send cookies with cross-site WebSocket handshakes, so the Origin
        # check is what stops other sites from chatting as the logged-in user.
        # Outermost: it needs the send Daphne passed in, not a middleware's wrapper.
        "websocket": BackpressureMiddleware(
            AllowedHostsOriginValidator(
                AuthMiddlewareStack(WebsocketLocaleMiddleware(URLRouter(websocket_urlpatterns)))
            )
        ),
    }
)

# What is loaded by now (Django, Channels, Twisted: ~97,000 objects) lives as long
# as the process. Out of the collector's sight, a full collection, which stops
# every socket of the process, took 25-40 ms instead of 70-100 under the
# benchmark's load: the light-load latency tail (issue 18).
gc.collect()
gc.freeze()
