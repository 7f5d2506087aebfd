"""Sign-up policy: open, closed (admins create accounts) or by single-use invite codes."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from chatstack.chat.models import Invite

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-unusual-passphrase"


def sign_up(client, username: str, **extra):
    return client.post(
        "/accounts/signup/",
        {"username": username, "password1": PASSWORD, "password2": PASSWORD, **extra},
    )


def exists(username: str) -> bool:
    return get_user_model().objects.filter(username=username).exists()


def invite_codes(count: int = 1, days: int = 7) -> list[str]:
    out = StringIO()
    call_command("invite", count=count, days=days, stdout=out, stderr=StringIO())
    return out.getvalue().split()


def test_open_signup_is_offered_on_the_login_page(client):
    assert 'href="/accounts/signup/' in client.get("/accounts/login/").text
    assert sign_up(client, "dave").status_code == 302
    assert exists("dave")


def test_closed_signup_is_refused_and_not_offered(client, settings):
    settings.CHATSTACK_SIGNUP = "closed"
    page = client.get("/accounts/signup/")
    assert page.status_code == 403
    assert "Sign-up is closed" in page.text
    assert sign_up(client, "dave").status_code == 403
    assert not exists("dave")
    assert "/accounts/signup/" not in client.get("/accounts/login/").text


def test_closed_site_still_lets_an_admin_create_accounts(client, settings):
    settings.CHATSTACK_SIGNUP = "closed"
    call_command("createsuperuser", username="root", email="", interactive=False)
    assert get_user_model().objects.get(username="root").is_superuser


def test_invite_only_signup_needs_a_valid_code(client, settings):
    settings.CHATSTACK_SIGNUP = "invite"
    assert 'name="invite"' in client.get("/accounts/signup/").text
    response = sign_up(client, "dave")
    assert response.status_code == 200
    assert not exists("dave")
    response = sign_up(client, "dave", invite="made-up-code")
    assert "This invite code is unknown, used or expired." in response.text
    assert not exists("dave")

    [code] = invite_codes()
    assert sign_up(client, "dave", invite=f" {code} ").status_code == 302
    assert exists("dave")
    assert Invite.objects.get().used_by.username == "dave"


def test_an_invite_code_is_single_use(client, settings):
    settings.CHATSTACK_SIGNUP = "invite"
    [code] = invite_codes()
    assert sign_up(client, "dave", invite=code).status_code == 302
    client.logout()
    response = sign_up(client, "erin", invite=code)
    assert "This invite code is unknown, used or expired." in response.text
    assert not exists("erin")


def test_an_invite_code_expires(client, settings):
    settings.CHATSTACK_SIGNUP = "invite"
    [code] = invite_codes(days=1)
    Invite.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert "unknown, used or expired" in sign_up(client, "dave", invite=code).text
    assert not exists("dave")


def test_a_code_spent_between_check_and_save_creates_no_account(client, settings, monkeypatch):
    settings.CHATSTACK_SIGNUP = "invite"
    [code] = invite_codes()
    monkeypatch.setattr(Invite, "redeem", classmethod(lambda cls, code, user: False))
    assert "unknown, used or expired" in sign_up(client, "dave", invite=code).text
    assert not exists("dave")


def test_invite_codes_are_stored_only_as_digests(settings):
    codes = invite_codes(count=3)
    assert len(set(codes)) == 3
    stored = list(Invite.objects.values_list("code_digest", flat=True))
    assert not set(codes) & set(stored)
    assert all(len(code) >= 16 for code in codes)


def test_invite_warns_when_signup_is_not_invite_only(settings):
    err = StringIO()
    call_command("invite", stdout=StringIO(), stderr=err)
    assert "only while it is 'invite'" in err.getvalue()


def test_admins_see_who_used_an_invite(client, settings):
    settings.CHATSTACK_SIGNUP = "invite"
    [code] = invite_codes()
    sign_up(client, "dave", invite=code)
    admin = get_user_model().objects.create_superuser("root", password="pw")
    client.force_login(admin)
    page = client.get("/admin/chat/invite/")
    assert page.status_code == 200
    assert "dave" in page.text
    assert client.get("/admin/chat/invite/add/").status_code == 403
