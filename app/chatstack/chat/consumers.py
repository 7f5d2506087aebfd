import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.translation import gettext as _

from . import latest, limits, metrics
from .history import WriterBusy, load_between, load_history, load_older, save_message
from .limits import AccountSockets
from .metrics import Rejection, Revocation
from .overload import BACKLOG, LOOP_LAG, Backpressure
from .presence import RoomPresence, Snapshot
from .protocol import (
    CLOSE_LIMITED,
    CLOSE_REVOKED,
    CLOSE_TOO_SLOW,
    HistoryRequest,
    InvalidMessage,
    Post,
    busy_message,
    parse_frame,
    refusal_message,
    revocation_message,
    too_slow_message,
)
from .revocation import account_group, session_group, still_signed_in
from .rooms import group_name, is_valid_room_name

logger = logging.getLogger(__name__)

# Heartbeats between checks of a socket's session against the database.
SESSION_CHECK_BEATS = 3


class Budget:
    """One of the account's limits as this socket sees it.

    Once the budget is spent, frames are refused here without asking Redis
    until it frees up, so a flood costs Redis nothing.
    """

    def __init__(self, take: Callable[[int], Awaitable[float]]) -> None:
        self.take = take
        # Until then (time.perf_counter()) the budget is spent.
        self.until = 0.0

    async def spent(self, user_id: int, arrived: float) -> bool:
        if arrived >= self.until:
            wait = await self.take(user_id)
            self.until = time.perf_counter() + wait if wait else 0.0
        return arrived < self.until


class ChatConsumer(AsyncWebsocketConsumer):
    room: str | None = None
    # The newest message this client has been sent: every message of the room
    # up to it has been sent too (see deliver()).
    last_id = 0
    presence: RoomPresence | None = None
    heartbeat: asyncio.Task | None = None
    # Whether this connection is included in the open-connections gauge.
    counted = False
    # This connection's place among its account's open sockets, once admitted.
    sockets: AccountSockets | None = None
    # Set once the server closes the connection: nothing more is sent or taken.
    closing = False
    # How far behind the client is in taking what it is sent; only Daphne tells.
    backpressure: Backpressure | None = None
    # The client's latest post, stored and broadcast after its earlier ones (see post()).
    posting: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Here rather than in disconnect(): a consumer that crashes (say, the
            # history query fails after accept) never gets its disconnect()
            # called, nor does one Daphne cancels because it was still busy after
            # its socket closed (a post stuck on a dead Redis master), whose
            # heartbeat went on failing every 20 s for good.
            if self.heartbeat is not None:
                self.heartbeat.cancel()
            if self.posting is not None:
                # A post the client made before leaving is still stored and broadcast.
                await asyncio.wait([self.posting])
            if self.counted:
                metrics.WEBSOCKET_CONNECTIONS.dec()
            if self.sockets is not None:
                await self.release_socket()

    async def dispatch(self, message: dict) -> None:
        # channels' own dispatch first runs close_old_connections in the database
        # thread for every event: in a room of n, n thread hops per message, each
        # queued behind the database writes (the benchmark's largest cost). Every
        # query here goes through database_sync_to_async, which closes old
        # connections around itself, so that step is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        user = self.scope["user"]
        if not user.is_authenticated or not is_valid_room_name(room):
            # Closing before accept() refuses the handshake (HTTP 403).
            await self.close()
            return
        sockets = AccountSockets(user.pk, room, self.channel_name)
        refusal = await sockets.admit()
        if refusal is not None:
            metrics.CONNECTIONS_REFUSED[refusal].inc()
            # Accepted only to say why: a refused handshake reaches the page as a bare 1006.
            await self.accept()
            await self.close_with(refusal_message(refusal), CLOSE_LIMITED)
            return
        self.sockets = sockets
        self.backpressure = self.scope.get("backpressure")
        self.room = room
        self.user = user
        self.group = group_name(room)
        self.session_key = self.scope["session"].session_key
        # The room's, then those through which a logout, password change or
        # deactivation closes this socket (chat.revocation). A notice sent
        # before they are joined is caught by the heartbeat's session check.
        self.subscriptions = [
            self.group,
            account_group(user.pk),
            session_group(self.session_key),
        ]
        self.max_length = settings.CHATSTACK_MESSAGE_MAX_LENGTH
        self.presence_version = 0
        self.delivering = asyncio.Lock()
        # Looked up on every call: tests replace the functions of `limits`.
        self.message_budget = Budget(lambda user_id: limits.take_message(user_id))
        self.history_budget = Budget(lambda user_id: limits.take_history_page(user_id))

        # Join the group before reading history, so that no message falls between
        # the two; one posted meanwhile is in the history, and deliver() skips its event.
        for group in self.subscriptions:
            await self.channel_layer.group_add(group, self.channel_name)
        # Counted before the client learns of the accept, so the gauge never lags it.
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        await self.accept()
        history, self.last_id = await load_history(room, settings.CHATSTACK_HISTORY_SIZE)
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
        for group in self.subscriptions:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.presence is not None:
            try:
                await self.broadcast_presence(await self.presence.leave())
            except Exception:
                # The heartbeat-based expiry removes the entry later anyway.
                logger.warning("Could not remove presence in room %r", self.room, exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        arrived = time.perf_counter()
        if self.closing:
            return
        try:
            request = parse_frame(text_data, self.max_length)
        except InvalidMessage as error:
            request = error
        if isinstance(request, HistoryRequest):
            await self.send_older(request, arrived)
            return
        # Counted before a bad frame is refused, so floods of garbage are throttled too.
        try:
            limited = await self.message_budget.spent(self.user.pk, arrived)
        except Exception:
            logger.exception("Could not check the message limit in room %r", self.room)
            await self.reject(Rejection.NOT_SENT, _("Message not sent, try again."), request.cid)
            return
        if limited:
            await self.reject(
                Rejection.RATE_LIMITED,
                _(
                    "Slow down: at most %(count)d messages per %(seconds)d seconds"
                    " from your account."
                )
                % {
                    "count": settings.CHATSTACK_RATE_LIMIT_COUNT,
                    "seconds": settings.CHATSTACK_RATE_LIMIT_SECONDS,
                },
                request.cid,
            )
            return
        if isinstance(request, InvalidMessage):
            await self.reject(request.reason, str(request), request.cid)
            return
        self.post(request, arrived)

    def post(self, post: Post, arrived: float) -> None:
        """Stores and broadcasts the post in a task, after the client's earlier posts.

        Not awaited here: a consumer handles one event at a time, so while its
        post waited for the database (up to CHATSTACK_POST_MAX_WAIT_SECONDS) the
        room's messages to this client queued behind it. At four times what the
        host could carry, people posting every second got the room seconds late.
        """
        self.posting = asyncio.create_task(self.post_after(self.posting, post, arrived))

    async def post_after(self, earlier: asyncio.Task | None, post: Post, arrived: float) -> None:
        if earlier is not None:
            await asyncio.wait([earlier])
        with BACKLOG.place() as placed:
            if placed and not LOOP_LAG.behind():
                await self.store_and_broadcast(post, arrived)
            else:
                await self.reject(Rejection.BUSY, busy_message(), post.cid)

    async def store_and_broadcast(self, post: Post, arrived: float) -> None:
        try:
            message, previous, new = await save_message(
                self.room,
                self.user,
                post.text,
                post.cid,
                deadline=arrived + settings.CHATSTACK_POST_MAX_WAIT_SECONDS,
            )
            await latest.record(self.room, message.id)
            frame = json.dumps(message.as_frame())
            # Before the broadcast, which deliver() may send this client at once.
            sent_before = message.id <= self.last_id
            # A retry is broadcast again too: if the first broadcast failed, the
            # room gets the message now; where it arrived, deliver() drops it.
            await self.channel_layer.group_send(
                self.group,
                {
                    "type": "chat.message",
                    # Serialised once here; every receiver forwards the same string.
                    "frame": frame,
                    "id": message.id,
                    "previous": previous,
                },
            )
        except WriterBusy:
            await self.reject(Rejection.BUSY, busy_message(), post.cid)
            return
        except Exception:
            logger.exception("Could not post a message in room %r", self.room)
            await self.reject(Rejection.NOT_SENT, _("Message not sent, try again."), post.cid)
            return
        if not new:
            if sent_before:
                # deliver() drops the broadcast's copy; a client never sent it gets that copy.
                await self.send(text_data=frame)
            return
        metrics.MESSAGES_ACCEPTED.inc()
        metrics.BROADCAST_LATENCY.observe(time.perf_counter() - arrived)

    async def send_older(self, request: HistoryRequest, arrived: float) -> None:
        try:
            if await self.history_budget.spent(self.user.pk, arrived):
                await self.reject(
                    Rejection.HISTORY_LIMITED,
                    _(
                        "Slow down: older messages are loaded at most %(count)d times per"
                        " %(seconds)d seconds."
                    )
                    % {
                        "count": limits.HISTORY_PAGES_COUNT,
                        "seconds": limits.HISTORY_PAGES_SECONDS,
                    },
                    before=request.before,
                )
                return
            messages, complete = await load_older(self.room, request.before, request.limit)
        except Exception:
            logger.exception("Could not load older messages in room %r", self.room)
            await self.reject(
                Rejection.HISTORY_FAILED,
                _("Older messages could not be loaded, try again."),
                before=request.before,
            )
            return
        await self.send_json(
            {
                "type": "history",
                "messages": messages,
                "complete": complete,
                "before": request.before,
            }
        )

    async def chat_message(self, event: dict) -> None:
        if "id" not in event:
            # From a process of the previous release, during a rolling deploy.
            await self.send(text_data=event["frame"])
            return
        await self.deliver(event["id"], event["previous"], event["frame"])

    async def deliver(self, message_id: int, previous: int | None, frame: str | None) -> None:
        """Sends the client message `message_id`, after any of the room's it missed.

        The channel layer can lose messages (channels_redis' pub/sub layer while
        it reconnects, the core layer over capacity) and deliver them out of
        order; the database cannot. A message whose predecessor the client was
        not sent reveals a gap, filled from the database; the heartbeat finds
        gaps that no later message reveals (see keep_alive()).
        """
        async with self.delivering:
            if message_id <= self.last_id:
                return  # Sent already, by an earlier gap fill or with the history.
            if (previous or 0) > self.last_id or frame is None:
                before = None if frame is None else message_id
                for missed in await load_between(self.room, self.last_id, before):
                    metrics.MESSAGES_RECOVERED.inc()
                    await self.send_json(missed)
                    self.last_id = missed["id"]
            if frame is not None:
                await self.send(text_data=frame)
                self.last_id = message_id

    async def chat_presence(self, event: dict) -> None:
        if event["version"] > self.presence_version:
            self.presence_version = event["version"]
            await self.send(text_data=event["frame"])

    async def broadcast_presence(self, snapshot: Snapshot) -> None:
        frame = json.dumps({"type": "presence", "users": snapshot.users})
        await self.channel_layer.group_send(
            self.group, {"type": "chat.presence", "version": snapshot.version, "frame": frame}
        )

    async def account_revoke(self, event: dict) -> None:
        await self.revoke(Revocation(event["reason"]))

    async def revoke(self, reason: Revocation) -> None:
        if self.closing:
            return
        metrics.CONNECTIONS_REVOKED[reason].inc()
        await self.close_with(revocation_message(reason), CLOSE_REVOKED)

    async def close_with(self, error: str, code: int) -> None:
        """Tells the client why in an error frame, then closes with `code`."""
        if self.closing:
            return
        self.closing = True
        # Past the checks of send(): this frame goes even to a client cut off for being slow.
        await super().send(text_data=json.dumps({"type": "error", "error": error}))
        await self.close(code=code)

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        # Events still arriving from the channel layer after close() reach nobody.
        if self.closing:
            return
        if (
            self.backpressure is not None
            and self.backpressure.stalled_for() > settings.CHATSTACK_SLOW_READER_SECONDS
        ):
            # Whatever it missed is stored: on reconnect the history brings it.
            metrics.CONNECTIONS_TOO_SLOW.inc()
            await self.close_with(too_slow_message(), CLOSE_TOO_SLOW)
            return
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def release_socket(self) -> None:
        try:
            await self.sockets.release()
        except Exception:
            # It expires three heartbeats later anyway.
            logger.warning("Could not release a socket of room %r", self.room, exc_info=True)

    async def keep_alive(self) -> None:
        for beat in itertools.count(1):
            await asyncio.sleep(settings.CHATSTACK_HEARTBEAT_SECONDS)
            try:
                # A backstop for a revocation notice that never arrived, or a
                # change that sent none. Every heartbeat would be a database
                # read per socket every 20 s, all of them queued with the writes.
                if beat % SESSION_CHECK_BEATS == 0 and not await still_signed_in(
                    self.session_key, self.user.pk
                ):
                    await self.revoke(Revocation.SESSION_ENDED)
                    return
                await self.sockets.refresh()
                # channels_redis forgets group members after group_expiry; re-adding
                # keeps long-lived connections subscribed.
                for group in self.subscriptions:
                    await self.channel_layer.group_add(group, self.channel_name)
                snapshot = await self.presence.touch()
                if snapshot.pruned:
                    await self.broadcast_presence(snapshot)
                newest = await latest.newest(self.room)
                if newest > self.last_id:
                    # It may simply be on its way: give it a tenth of a heartbeat.
                    await asyncio.sleep(settings.CHATSTACK_HEARTBEAT_SECONDS / 10)
                    await self.deliver(newest, None, None)
            except Exception:
                logger.warning("Presence heartbeat failed in room %r", self.room, exc_info=True)

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))

    async def reject(
        self, reason: Rejection, error: str, cid: str | None = None, before: int | None = None
    ) -> None:
        """Count the rejection, then tell the client with an error frame.

        The frame names the message (`cid`) or the history page (`before`) it
        refuses, when the client's frame said which, and the reason, for the
        page to tell a refusal for now (busy, not sent, rate limited: sent again
        later) from one for good.
        """
        metrics.MESSAGES_REJECTED[reason].inc()
        frame = {"type": "error", "error": error, "reason": reason.value}
        if cid is not None:
            frame["cid"] = cid
        if before is not None:
            frame["before"] = before
        await self.send_json(frame)
