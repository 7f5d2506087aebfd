"""Logout, password change and deactivation close the sockets they end, within seconds."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from chatstack.chat import revocation
from chatstack.chat.metrics import Revocation
from chatstack.chat.protocol import CLOSE_REVOKED

from .conftest import session_cookie_of
from .metricsutil import value
from .wsutil import closed_by_server, joined, receive

pytestmark = pytest.mark.django_db(transaction=True)


def revoked(reason: Revocation) -> float:
    return value("chatstack_connections_revoked_total", reason=reason)


async def logged_in_browser(user) -> tuple[Client, bytes]:
    browser = Client()
    await sync_to_async(browser.force_login)(user)
    return browser, session_cookie_of(browser)


async def still_works(communicator, text: str = "still here") -> None:
    await communicator.send_json_to({"message": text})
    assert (await receive(communicator, "message"))["message"] == text


async def test_logout_closes_every_tab_of_that_browser_only(ws, alice):
    """Tabs left open after logging out in another tab must not keep posting."""
    before = revoked(Revocation.LOGGED_OUT)
    browser, cookie = await logged_in_browser(alice)
    tabs = [await ws(cookie=cookie, room=room) for room in ("general", "other")]
    for tab in tabs:
        await joined(tab)
    phone = await ws(user=alice, room="general")
    await joined(phone)

    response = await sync_to_async(browser.post)("/accounts/logout/")
    assert response.status_code == 302

    for tab in tabs:
        assert await closed_by_server(tab) == ("You logged out.", CLOSE_REVOKED)
    assert revoked(Revocation.LOGGED_OUT) == before + 2
    # The tabs' session is gone: they cannot reconnect with it.
    await ws(cookie=cookie, expect=False)
    # Another browser's session is still valid (Django ends one session per
    # logout), so its socket stays.
    await still_works(phone)


async def test_password_change_closes_every_socket_of_the_account(ws, alice, bob):
    before = revoked(Revocation.PASSWORD_CHANGED)
    sockets = [await ws(user=alice, room=room) for room in ("general", "general", "other")]
    for chat in sockets:
        await joined(chat)
    bystander = await ws(user=bob, room="general")
    await joined(bystander)

    alice.set_password("a-new-long-passphrase")
    await alice.asave()

    for chat in sockets:
        error, code = await closed_by_server(chat)
        assert (error, code) == ("Your password was changed: log in again.", CLOSE_REVOKED)
    assert revoked(Revocation.PASSWORD_CHANGED) == before + 3
    await still_works(bystander)


async def test_deactivation_by_an_admin_closes_the_accounts_sockets(ws, alice, transactional_db):
    admin = await sync_to_async(get_user_model().objects.create_superuser)("root", password="pw")
    before = revoked(Revocation.DEACTIVATED)
    chat = await ws(user=alice)
    await joined(chat)
    browser = Client()
    await sync_to_async(browser.force_login)(admin)

    response = await sync_to_async(browser.post)(
        f"/admin/auth/user/{alice.pk}/change/",
        {
            "username": "alice",
            "is_active": "",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content[:2000]

    error, code = await closed_by_server(chat)
    assert (error, code) == ("Your account was closed by an administrator.", CLOSE_REVOKED)
    assert revoked(Revocation.DEACTIVATED) == before + 1
    await ws(user=alice, expect=False)


async def test_deleted_account_loses_its_sockets(ws, alice):
    chat = await ws(user=alice)
    await joined(chat)
    await alice.adelete()
    assert (await closed_by_server(chat))[1] == CLOSE_REVOKED


async def test_logging_in_elsewhere_closes_nothing(ws, alice):
    """Logins save last_login, which is no reason to close anything."""
    chat = await ws(user=alice)
    await joined(chat)
    await logged_in_browser(alice)
    await sync_to_async(Client().login)(username="alice", password="alice-password")
    alice.first_name = "Alice"
    await alice.asave()
    assert await chat.receive_nothing(timeout=0.3)
    await still_works(chat)


async def test_heartbeat_closes_sockets_whose_notice_was_lost(ws, alice, settings, monkeypatch):
    """If Redis was unreachable at the moment of the change, the heartbeat notices."""
    notices = []
    monkeypatch.setattr(revocation, "revoke", lambda *args: notices.append(args))
    settings.CHATSTACK_HEARTBEAT_SECONDS = 0.2
    before = revoked(Revocation.SESSION_ENDED)
    chat = await ws(user=alice)
    await joined(chat)

    # A bulk update sends no signal at all.
    await get_user_model().objects.filter(pk=alice.pk).aupdate(is_active=False)

    error, code = await closed_by_server(chat)
    assert (error, code) == ("Your session ended: log in again.", CLOSE_REVOKED)
    assert revoked(Revocation.SESSION_ENDED) == before + 1


async def test_logout_works_when_the_notice_cannot_be_sent(alice, settings):
    # Nothing listens on port 9: sending the notice fails, the logout must not.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:9/0", "socket_timeout": 1}]},
        }
    }
    browser, _ = await logged_in_browser(alice)
    assert (await sync_to_async(browser.post)("/accounts/logout/")).status_code == 302
    assert (await sync_to_async(browser.get)("/chat/")).status_code == 302
