"""A room's stored messages: writing one, and reading them back in order."""

import contextlib
import fcntl
import time
from collections.abc import Iterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import Message


@database_sync_to_async
def load_history(room: str, size: int) -> tuple[list[dict], int]:
    """The newest `size` messages of the room, oldest first, and the room's newest id."""
    messages = Message.objects.filter(room=room).select_related("author").order_by("-id")
    newest = list(messages[: max(size, 1)])
    return [message.as_frame() for message in reversed(newest[:size])], (
        newest[0].id if newest else 0
    )


@database_sync_to_async
def load_between(room: str, after: int, before: int | None) -> list[dict]:
    """The room's messages with after < id < before (no upper bound for None), oldest first."""
    messages = Message.objects.filter(room=room, id__gt=after).select_related("author")
    if before is not None:
        messages = messages.filter(id__lt=before)
    return [message.as_frame() for message in messages.order_by("id")]


@database_sync_to_async
def load_older(room: str, before: int, limit: int) -> tuple[list[dict], bool]:
    """Up to `limit` of the room's messages older than `before`, oldest first, and
    whether they reach back to the room's first message."""
    older = list(
        Message.objects.filter(room=room, id__lt=before)
        .select_related("author")
        .order_by("-id")[: limit + 1]
    )
    return [message.as_frame() for message in reversed(older[:limit])], len(older) <= limit


def newest_id(room: str, below: int | None = None) -> int | None:
    messages = Message.objects.filter(room=room)
    if below is not None:
        messages = messages.filter(id__lt=below)
    return messages.order_by("-id").values_list("id", flat=True).first()


class WriterBusy(Exception):
    """The message waited for the database past its deadline, and was not stored."""


@database_sync_to_async
def save_message(
    room: str, author, text: str, cid: str | None = None, deadline: float | None = None
) -> tuple[Message, int | None, bool]:
    """Stores a message; returns it, the id of the room's message before it, and
    False if it was stored before (a retry with the same cid), not now.

    Raises WriterBusy instead of storing it after `deadline` (time.perf_counter()),
    before any query: an overloaded host refuses most posts, and each refusal that
    took a query would hold the writer (SQLite's one, the room's lock on
    PostgreSQL) that the posts it accepts wait for. A retry of a stored message
    refused so is acknowledged when it comes again.
    """
    _before(deadline)  # Waited in this process's queue for the database thread.
    with writer_lock():
        if connection.vendor == "sqlite":
            _before(deadline)  # Waited for the other processes' writes.
            inserted = _insert_sqlite(room, author, text, cid)
            if inserted is not None:
                return *inserted, True
            # Stored before: the lookup below finds it.
        return _save(room, author, text, cid, deadline)


def _save(
    room: str, author, text: str, cid: str | None, deadline: float | None
) -> tuple[Message, int | None, bool]:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Posts to one room are serialised, so "the message before" is exact
            # even when app hosts write concurrently, and so is the cid lookup
            # (the unique constraint is the last word either way).
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [room])
        _before(deadline)  # Waited for the other processes' writes (to the room, on PostgreSQL).
        if cid is not None:
            stored = (
                Message.objects.filter(room=room, author=author, cid=cid)
                .select_related("author")
                .first()
            )
            if stored is not None:
                return stored, newest_id(room, below=stored.id), False
        previous = newest_id(room)
        message = Message.objects.create(room=room, author=author, text=text, cid=cid)
        return message, previous, True


def _insert_sqlite(
    room: str, author, text: str, cid: str | None
) -> tuple[Message, int | None] | None:
    """Stores the message and finds the room's message before it in one statement,
    unless the author stored one with this cid in the room before (None then).

    The writer lock is held meanwhile, and every statement gives up the GIL to
    SQLite and waits to take it back from the event loop's thread (up to the
    5 ms switch interval when it is busy): the ORM's five statements held the
    lock 4.2 ms on average at 3,000 deliveries/s, which capped the host at
    ~240 posts/s (issue 18).
    """
    created = timezone.now()
    table = Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (room, author_id, text, created, cid)"  # noqa: S608 (the model's table)
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            f" RETURNING id, (SELECT max(id) FROM {table} AS earlier"
            f" WHERE earlier.room = %s AND earlier.id < {table}.id)",
            [room, author.pk, text, connection.ops.adapt_datetimefield_value(created), cid, room],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    message = Message(id=row[0], room=room, author=author, text=text, created=created, cid=cid)
    message._state.adding = False
    message._state.db = connection.alias
    return message, row[1]


def _before(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise WriterBusy


@contextlib.contextmanager
def writer_lock() -> Iterator[None]:
    """Queues this process's SQLite writes behind the other processes' in the kernel.

    SQLite admits one writer at a time and makes the others poll with sleeps of
    up to 100 ms; under load one Daphne's writes kept losing to another's (the
    benchmark's p99 fell from ~250 ms to ~120 ms with this lock).
    """
    if connection.vendor != "sqlite":
        yield
        return
    with open(settings.CHATSTACK_SQLITE_WRITER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
