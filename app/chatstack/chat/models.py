from datetime import UTC

from django.conf import settings
from django.db import models
from django.utils import timezone


class Message(models.Model):
    room = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages"
    )
    text = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        # History is "latest N of a room by id" and the lobby groups by room.
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"{self.room}: {self.text[:40]}"

    def as_frame(self) -> dict:
        """The wire representation; the author must already be loaded."""
        return {
            "type": "message",
            "id": self.id,
            "user": self.author.get_username(),
            "message": self.text,
            "ts": self.created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
