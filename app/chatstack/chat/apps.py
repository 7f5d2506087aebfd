from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chatstack.chat"
    label = "chat"
