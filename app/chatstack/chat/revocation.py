"""Closing the open sockets of a session or an account that no longer holds.

A WebSocket is authenticated once, at its handshake; without this, a user who
logs out, changes their password or is deactivated by an admin keeps posting
on the sockets already open. Every consumer joins two channel-layer groups:

- its session's: logout ends one session in Django (the browser that logged
  out, all its tabs), so it closes exactly the sockets opened with that
  session. Other browsers stay signed in, and closing their sockets would
  only make them reconnect at once.
- its account's: a password change or deactivation ends every session of the
  account (Django rejects sessions whose password hash is stale, and inactive
  users), so it closes every socket of the account, on every app host.

The notices are sent by the process where the change happens (uWSGI for the
admin and logout, `chatstack-manage` for changepassword). If one is lost
(Redis was unreachable at that moment), each consumer checks its session
against the database every third heartbeat, and closes the socket within a
minute.
"""

import asyncio
import hashlib
import logging
from functools import partial
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from .layers import private_layer
from .metrics import Revocation

logger = logging.getLogger(__name__)

# The event consumers handle with ChatConsumer.account_revoke().
EVENT_TYPE = "account.revoke"
SEND_TIMEOUT_SECONDS = 5


def account_group(user_id: int) -> str:
    return f"account.{user_id}"


def session_group(session_key: str) -> str:
    # Session keys are credentials: Redis sees only a digest of them.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


async def _send(group: str, reason: Revocation) -> None:
    async with private_layer() as layer, asyncio.timeout(SEND_TIMEOUT_SECONDS):
        await layer.group_send(group, {"type": EVENT_TYPE, "reason": str(reason)})


def revoke(group: str, reason: Revocation) -> None:
    """Tells every socket in `group`, on every app host, to close."""
    try:
        async_to_sync(_send)(group, reason)
    except Exception:
        # The logout or save itself must not fail; the heartbeat check closes
        # the sockets a little later.
        logger.warning("Could not tell %s to close its sockets (%s)", group, reason, exc_info=True)


@database_sync_to_async
def still_signed_in(session_key: str | None, user_id: int) -> bool:
    """Whether the session still belongs to this active user, as Django would decide now.

    A fresh read: the consumer's own session object holds what it loaded at
    the handshake.
    """
    if not session_key:
        return False
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(request).pk == user_id


@receiver(user_logged_out, dispatch_uid="chatstack.revoke_on_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    # Sent before the session is flushed, so its key is still known.
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        revoke(session_group(session_key), Revocation.LOGGED_OUT)


@receiver(pre_save, sender=get_user_model(), dispatch_uid="chatstack.revoke_on_change")
def _credentials_changing(sender, instance, raw, update_fields, **kwargs) -> None:
    # Logins save last_login alone: no query for them.
    if (
        raw
        or instance.pk is None
        or (update_fields is not None and not {"password", "is_active"} & set(update_fields))
    ):
        return
    stored = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if stored is None:
        return
    if stored["is_active"] and not instance.is_active:
        reason = Revocation.DEACTIVATED
    elif stored["password"] != instance.password:
        reason = Revocation.PASSWORD_CHANGED
    else:
        return
    # Only once the change is stored: a socket closed earlier could reconnect
    # with the old credentials still valid.
    transaction.on_commit(partial(revoke, account_group(instance.pk), reason))


@receiver(post_delete, sender=get_user_model(), dispatch_uid="chatstack.revoke_on_delete")
def _deleted(sender, instance, **kwargs) -> None:
    transaction.on_commit(partial(revoke, account_group(instance.pk), Revocation.DELETED))
