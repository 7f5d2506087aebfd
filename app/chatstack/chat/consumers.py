import asyncio
import json
import logging
import time
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import metrics
from .metrics import Rejection
from .models import Message
from .presence import RoomPresence, Snapshot
from .rooms import group_name, is_valid_room_name

logger = logging.getLogger(__name__)


class InvalidMessage(ValueError):
    """The client sent something that is not a postable chat message."""

    def __init__(self, error: str, reason: Rejection) -> None:
        super().__init__(error)
        self.reason = reason


def parse_message(raw: str, max_length: int) -> str:
    # Cheap bound before json.loads: JSON spends at most 12 characters
    # (a \\uXXXX surrogate pair) per character of text.
    if len(raw) > 12 * max_length + 64:
        raise InvalidMessage(
            f"Message is too long (at most {max_length} characters).", Rejection.TOO_LONG
        )
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidMessage("Message is not valid JSON.", Rejection.INVALID_JSON) from None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        raise InvalidMessage(
            'Expected a JSON object like {"message": "text"}.', Rejection.INVALID_FRAME
        )
    text = data["message"]
    if not text.strip():
        raise InvalidMessage("Message is empty.", Rejection.EMPTY)
    if len(text) > max_length:
        raise InvalidMessage(
            f"Message is too long (at most {max_length} characters).", Rejection.TOO_LONG
        )
    if "\x00" in text:
        # PostgreSQL cannot store NUL in text columns.
        raise InvalidMessage("Message contains a NUL character.", Rejection.NUL_CHARACTER)
    return text


class RateLimiter:
    """At most `limit` accepted events in any sliding window of `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._accepted: deque[float] = deque()

    def allow(self) -> bool:
        now = time.monotonic()
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()
        if len(self._accepted) >= self.limit:
            return False
        self._accepted.append(now)
        return True


@database_sync_to_async
def load_history(room: str, size: int) -> list[dict]:
    newest = Message.objects.filter(room=room).select_related("author").order_by("-id")[:size]
    return [message.as_frame() for message in reversed(newest)]


@database_sync_to_async
def save_message(room: str, author, text: str) -> Message:
    return Message.objects.create(room=room, author=author, text=text)


class ChatConsumer(AsyncWebsocketConsumer):
    room: str | None = None
    presence: RoomPresence | None = None
    heartbeat: asyncio.Task | None = None
    # Whether this connection is included in the open-connections gauge.
    counted = False

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Here rather than in disconnect(): a consumer that crashes (say, the
            # history query fails after accept) never gets its disconnect() called.
            if self.counted:
                metrics.WEBSOCKET_CONNECTIONS.dec()

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        user = self.scope["user"]
        if not user.is_authenticated or not is_valid_room_name(room):
            # Closing before accept() refuses the handshake (HTTP 403).
            await self.close()
            return
        self.room = room
        self.user = user
        self.group = group_name(room)
        self.max_length = settings.CHATSTACK_MESSAGE_MAX_LENGTH
        self.rate_limit = RateLimiter(
            settings.CHATSTACK_RATE_LIMIT_COUNT, settings.CHATSTACK_RATE_LIMIT_SECONDS
        )
        self.presence_version = 0

        # Join the group before reading history, so that no message falls between
        # the two; one posted meanwhile arrives twice and the client dedupes by id.
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Counted before the client learns of the accept, so the gauge never lags it.
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        await self.accept()
        history = await load_history(room, settings.CHATSTACK_HISTORY_SIZE)
        await self.send_json({"type": "history", "messages": history})

        self.presence = RoomPresence(room, user.get_username(), self.channel_name)
        await self.broadcast_presence(await self.presence.touch())
        self.heartbeat = asyncio.create_task(self.keep_alive())

    async def disconnect(self, code: int) -> None:
        if self.room is None:
            return
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            # Let it finish, so a refresh in flight cannot re-add what we remove below.
            await asyncio.wait([self.heartbeat])
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.presence is not None:
            try:
                await self.broadcast_presence(await self.presence.leave())
            except Exception:
                # The heartbeat-based expiry removes the entry later anyway.
                logger.warning("Could not remove presence in room %r", self.room, exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        arrived = time.perf_counter()
        # Counted before parsing, so floods of garbage are throttled too.
        if not self.rate_limit.allow():
            await self.reject(
                Rejection.RATE_LIMITED,
                f"Slow down: at most {self.rate_limit.limit} messages"
                f" per {self.rate_limit.window:g} seconds.",
            )
            return
        if text_data is None:
            # An error frame rather than close code 1003: daphne (autobahn) only lets
            # applications close with 1000 or 3000-4999.
            await self.reject(
                Rejection.BINARY_FRAME, "Binary frames are not supported; send JSON text."
            )
            return
        try:
            text = parse_message(text_data, self.max_length)
        except InvalidMessage as error:
            await self.reject(error.reason, str(error))
            return
        try:
            message = await save_message(self.room, self.user, text)
            # Serialised once here; every receiver forwards the same string.
            await self.channel_layer.group_send(
                self.group, {"type": "chat.message", "frame": json.dumps(message.as_frame())}
            )
        except Exception:
            logger.exception("Could not post a message in room %r", self.room)
            await self.reject(Rejection.NOT_SENT, "Message not sent, try again.")
            return
        metrics.MESSAGES_ACCEPTED.inc()
        metrics.BROADCAST_LATENCY.observe(time.perf_counter() - arrived)

    async def chat_message(self, event: dict) -> None:
        await self.send(text_data=event["frame"])

    async def chat_presence(self, event: dict) -> None:
        if event["version"] > self.presence_version:
            self.presence_version = event["version"]
            await self.send(text_data=event["frame"])

    async def broadcast_presence(self, snapshot: Snapshot) -> None:
        frame = json.dumps({"type": "presence", "users": snapshot.users})
        await self.channel_layer.group_send(
            self.group, {"type": "chat.presence", "version": snapshot.version, "frame": frame}
        )

    async def keep_alive(self) -> None:
        while True:
            await asyncio.sleep(settings.CHATSTACK_HEARTBEAT_SECONDS)
            try:
                # channels_redis forgets group members after group_expiry; re-adding
                # keeps long-lived connections subscribed.
                await self.channel_layer.group_add(self.group, self.channel_name)
                snapshot = await self.presence.touch()
                if snapshot.pruned:
                    await self.broadcast_presence(snapshot)
            except Exception:
                logger.warning("Presence heartbeat failed in room %r", self.room, exc_info=True)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))

    async def reject(self, reason: Rejection, error: str) -> None:
        """Count the rejection, then tell the client with an error frame."""
        metrics.MESSAGES_REJECTED[reason].inc()
        await self.send_json({"type": "error", "error": error})
