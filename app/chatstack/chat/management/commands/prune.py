from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from chatstack.chat import latest
from chatstack.chat.history import writer_lock
from chatstack.chat.models import Invite, Message
from chatstack.redis_hosts import client, host_entry

# Room names per Redis DEL and per SQL IN list (SQLite caps a statement's parameters).
CHUNK = 500


class Command(BaseCommand):
    help = (
        "Deletes messages older than CHATSTACK_MESSAGE_RETENTION_DAYS (none if 0) in"
        " batches, the Redis keys of rooms left without messages, and expired invites."
        " Run daily by chatstack-prune.timer."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Messages deleted per transaction (default 1000): chat writes wait at most one.",
        )

    def handle(self, *args, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        now = timezone.now()
        deleted, rooms = 0, set()
        days = settings.CHATSTACK_MESSAGE_RETENTION_DAYS
        if days:
            old = Message.objects.filter(created__lt=now - timedelta(days=days))
            while batch := list(
                old.order_by("created", "id").values_list("id", "room")[:batch_size]
            ):
                with writer_lock(), transaction.atomic():
                    Message.objects.filter(id__in=[id_ for id_, _ in batch]).delete()
                deleted += len(batch)
                rooms.update(room for _, room in batch)
        emptied = sorted(rooms - set(_rooms_with_messages(rooms)))
        self.forget(emptied)
        invites, _ = Invite.objects.filter(expires__lte=now).delete()
        self.stdout.write(
            f"Deleted {deleted} messages older than {days} days"
            if days
            else "Messages are kept forever (CHATSTACK_MESSAGE_RETENTION_DAYS=0)"
        )
        self.stdout.write(f"Rooms left empty: {len(emptied)}; expired invites deleted: {invites}")

    def forget(self, rooms: list[str]) -> None:
        """Deletes the Redis keys of rooms that have no messages left."""
        async_to_sync(_forget)(rooms)


async def _forget(rooms: list[str]) -> None:
    # An asyncio client: CHATSTACK_REDIS_OPTIONS' retry is redis.asyncio's.
    redis = client(
        host_entry(
            settings.CHATSTACK_PRESENCE_REDIS_URL,
            settings.REDIS_SENTINELS,
            socket_timeout=5,
            **settings.CHATSTACK_REDIS_OPTIONS,
        )
    )
    try:
        # Earlier releases' one set of every room ever used goes too.
        await redis.delete(latest.LEGACY_KEY)
        for start in range(0, len(rooms), CHUNK):
            await redis.delete(*(latest.key(room) for room in rooms[start : start + CHUNK]))
    finally:
        await redis.aclose(close_connection_pool=True)


def _rooms_with_messages(rooms: set[str]) -> list[str]:
    names = sorted(rooms)
    found = []
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        found += Message.objects.filter(room__in=chunk).values_list("room", flat=True).distinct()
    return found
