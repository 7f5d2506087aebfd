"""`chatstack-manage prune`: old messages go in batches, with what refers to their rooms."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from chatstack.chat import latest
from chatstack.chat.models import Invite, Message

from .test_settings import load_settings

pytestmark = pytest.mark.django_db


def prune(**options) -> str:
    out = StringIO()
    call_command("prune", stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def rooms(alice, redis_client):
    """'gone' holds only messages past retention, 'mixed' old and new ones."""
    old = timezone.now() - timedelta(days=400)
    for room, created in [("gone", old)] * 5 + [("mixed", old)] * 3 + [("mixed", timezone.now())]:
        Message.objects.create(
            room=room, author=alice, text=f"{room} {created:%Y}", created=created
        )
    for room in ("gone", "mixed"):
        redis_client.set(latest.key(room), Message.objects.filter(room=room).latest("id").id)
    redis_client.zadd(latest.LEGACY_KEY, {"gone": 1, "mixed": 2})
    return redis_client


def test_prune_deletes_old_messages_in_batches_and_forgets_empty_rooms(rooms, alice, settings):
    settings.CHATSTACK_MESSAGE_RETENTION_DAYS = 365

    output = prune(batch_size=2)

    assert "Deleted 8 messages older than 365 days" in output
    assert list(Message.objects.values_list("room", flat=True)) == ["mixed"]
    assert not rooms.exists(latest.key("gone"))
    assert rooms.exists(latest.key("mixed")), "a room with messages keeps its key"
    assert not rooms.exists(latest.LEGACY_KEY)
    # The lobby lists what is left, and the room's history is intact.
    browser = Client()
    browser.force_login(alice)
    recent = browser.get("/chat/").context["recent_rooms"]
    assert [entry["room"] for entry in recent] == ["mixed"]


def test_zero_retention_keeps_every_message(rooms, settings):
    settings.CHATSTACK_MESSAGE_RETENTION_DAYS = 0
    assert "kept forever" in prune()
    assert Message.objects.count() == 9
    assert rooms.exists(latest.key("gone"))


def test_prune_deletes_expired_invites_only(redis_client):
    Invite.issue(timedelta(days=1))
    Invite.issue(timedelta(days=1))
    Invite.objects.filter(pk=Invite.objects.first().pk).update(expires=timezone.now())
    assert "expired invites deleted: 1" in prune()
    assert Invite.objects.count() == 1


def test_retention_is_read_from_the_environment(env):
    env.setenv("CHATSTACK_MESSAGE_RETENTION_DAYS", "0")
    assert load_settings()["CHATSTACK_MESSAGE_RETENTION_DAYS"] == 0
    env.setenv("CHATSTACK_MESSAGE_RETENTION_DAYS", "-1")
    with pytest.raises(ImproperlyConfigured, match="CHATSTACK_MESSAGE_RETENTION_DAYS"):
        load_settings()
