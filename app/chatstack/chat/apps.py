from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chatstack.chat"
    label = "chat"

    def ready(self) -> None:
        # Connects the signal receivers that close revoked sessions' sockets.
        from . import revocation  # noqa: F401
