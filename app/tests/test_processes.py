"""Two Daphne processes, or app hosts: consumers with channel layers of their own,
sharing only Redis and the database. Limits and revocations must hold across them."""

import pytest
from channels.auth import AuthMiddlewareStack
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from chatstack.asgi import application
from chatstack.chat.consumers import ChatConsumer
from chatstack.chat.protocol import CLOSE_LIMITED, CLOSE_REVOKED

from .wsutil import closed_by_server, joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


class OtherProcessConsumer(ChatConsumer):
    channel_layer_alias = "other-process"


OTHER_PROCESS = AllowedHostsOriginValidator(
    AuthMiddlewareStack(
        URLRouter([path("ws/chat/<str:room_name>/", OtherProcessConsumer.as_asgi())])
    )
)


@pytest.fixture
def two_processes(redis_client, settings):
    layers = settings.CHANNEL_LAYERS
    # The same configuration, so a layer instance (and Redis connections) of its own.
    settings.CHANNEL_LAYERS = {**layers, "other-process": layers["default"]}
    assert channel_layers["other-process"] is not channel_layers["default"]


async def test_socket_cap_holds_across_processes(ws, alice, two_processes, settings):
    settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS = 2
    here = await ws(user=alice, room="general")
    await joined(here)
    there = await ws(user=alice, room="general", app=OTHER_PROCESS)
    await joined(there)

    for app in (OTHER_PROCESS, application):
        refused = await ws(user=alice, room="general", app=app)
        assert (await closed_by_server(refused))[1] == CLOSE_LIMITED

    # The two processes' sockets still chat with each other.
    await here.send_json_to({"message": "across"})
    assert (await receive(there, "message"))["message"] == "across"


async def test_revocation_reaches_every_process(ws, alice, two_processes):
    here = await ws(user=alice, room="general")
    await joined(here)
    there = await ws(user=alice, room="other", app=OTHER_PROCESS)
    await joined(there)

    # As the admin's request would, in yet another process (uWSGI).
    alice.is_active = False
    await alice.asave()

    for chat in (here, there):
        assert (await closed_by_server(chat))[1] == CLOSE_REVOKED
