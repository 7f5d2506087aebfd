from django.urls import path

from .consumers import ChatConsumer

# Any segment reaches the consumer, which refuses invalid room names with a clean
# handshake rejection instead of an unroutable-path error.
websocket_urlpatterns = [
    path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi()),
]
