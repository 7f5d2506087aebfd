import ipaddress
import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from chatstack.chat.models import Message
from chatstack.chat.strings import ROOM_STRINGS

from .conftest import layers_using

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user("carol", password="carol-password")


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def test_root_redirects_to_the_lobby(client):
    assert client.get("/").headers["Location"] == "/chat/"


@pytest.mark.parametrize("path", ["/chat/", "/chat/general/"])
def test_chat_pages_require_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/accounts/login/?next={path}"


def test_signup_logs_in_and_follows_next(client):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "dave",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
            "next": "/chat/general/",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/chat/general/"
    assert client.get("/chat/general/").status_code == 200


def test_signup_ignores_offsite_next(client):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "erin",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
            "next": "https://evil.example/",
        },
    )
    assert response.headers["Location"] == "/chat/"


def test_signup_rejects_mismatched_passwords(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "frank", "password1": "a-long-passphrase-1", "password2": "different-2"},
    )
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="frank").exists()


def test_login_then_logout_by_post_only(client, user):
    response = client.post(
        "/accounts/login/",
        {"username": "carol", "password": "carol-password", "next": "/chat/room-1/"},
    )
    assert response.headers["Location"] == "/chat/room-1/"
    assert client.get("/chat/").status_code == 200

    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/chat/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/chat/").status_code == 302


def test_login_rejects_a_wrong_password(client, user):
    response = client.post("/accounts/login/", {"username": "carol", "password": "nope"})
    assert response.status_code == 200
    assert client.get("/chat/").status_code == 302


def test_changing_the_password_logs_out_the_other_browsers_only(client, user):
    """After changing their password, a person stays signed in here and is logged out elsewhere."""
    elsewhere = Client()
    elsewhere.force_login(user)
    client.force_login(user)
    assert 'href="/accounts/password/"' in client.get("/chat/").text, "no link to the form"
    new = "a-new-unusual-passphrase"
    response = client.post(
        "/accounts/password/",
        {"old_password": "carol-password", "new_password1": new, "new_password2": new},
    )
    assert response.headers["Location"] == "/accounts/password/done/"
    assert client.get("/chat/").status_code == 200, "this browser was logged out"
    assert elsewhere.get("/chat/").status_code == 302, "another browser stayed signed in"


def test_the_password_is_not_changed_without_the_old_one(logged_in, user):
    """Someone at an unlocked computer cannot take the account over by changing its password."""
    new = "a-new-unusual-passphrase"
    response = logged_in.post(
        "/accounts/password/",
        {"old_password": "wrong", "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.check_password("carol-password")


def test_lobby_lists_recently_active_rooms_newest_first(logged_in, user):
    for room in ["old", "newer", "old", "newest"]:
        Message.objects.create(room=room, author=user, text="hi")

    response = logged_in.get("/chat/")

    rooms = [entry["room"] for entry in response.context["recent_rooms"]]
    assert rooms == ["newest", "old", "newer"]
    assert 'href="/chat/newest/"' in response.text


def test_lobby_form_redirects_to_a_valid_room(logged_in):
    response = logged_in.get("/chat/", {"room": "Ünïcode_room-2"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/chat/%C3%9Cn%C3%AFcode_room-2/"


def test_lobby_form_rejects_an_invalid_room(logged_in):
    response = logged_in.get("/chat/", {"room": "no spaces"})
    assert response.status_code == 200
    assert "letters, digits, hyphens and underscores" in response.text


@pytest.mark.parametrize("path", ["/chat/a%20b/", "/chat/a.b/", f"/chat/{'x' * 65}/", "/chat/<b>/"])
def test_invalid_room_page_is_404(logged_in, path):
    assert logged_in.get(path).status_code == 404


def test_room_page_passes_the_name_as_json(logged_in):
    response = logged_in.get("/chat/caf%C3%A9/")
    assert response.status_code == 200
    assert json.dumps("café") in response.text or '"caf\\u00e9"' in response.text
    for element_id in [
        "chat-log",
        "chat-message-input",
        "chat-message-submit",
        "connection-state",
        "presence",
    ]:
        assert f'id="{element_id}"' in response.text


ROOM_JS = Path(__file__).resolve().parent.parent / "chatstack/chat/static/chat/room.js"
JSON_SCRIPT = re.compile(r'<script id="chat-strings" type="application/json">(.*?)</script>', re.S)


def test_room_page_gives_its_script_every_string_it_shows(logged_in):
    """A word the script spells itself, or a key the page does not pass, would
    show untranslated (or as "undefined") to a reader of another language."""
    script = ROOM_JS.read_text()
    used = set(re.findall(r"strings\.(\w+)", script))
    used |= set(re.findall(r'setState\("(\w+)"\)', script))
    assert used <= ROOM_STRINGS.keys(), used - ROOM_STRINGS.keys()
    assert not re.findall(r"textContent = \"|showError\(\"", script), "a string spelled in room.js"

    response = logged_in.get("/chat/general/")
    passed = json.loads(JSON_SCRIPT.search(response.text).group(1))
    assert passed == {key: str(text) for key, text in ROOM_STRINGS.items()}


def test_admin_is_enabled(client):
    assert client.get(reverse("admin:index")).status_code == 302


def test_healthz_reports_ok(client, redis_client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}
    assert "no-cache" in response.headers["Cache-Control"]


def test_healthz_names_an_unreachable_channel_layer(client, settings, redis_client):
    # Port 9 (discard): nothing listens there.
    settings.CHANNEL_LAYERS = layers_using(settings.CHANNEL_LAYERS, "redis://127.0.0.1:9/0")

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "channel_layer": "error"}


def test_healthz_rejects_writes(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.parametrize(
    "request_from",
    [
        {"REMOTE_ADDR": "192.0.2.10"},
        {"REMOTE_ADDR": "2001:db8::10"},
        # Through Nginx, which always names the client: even a local client is public there.
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "127.0.0.1"},
    ],
)
def test_public_healthz_answers_without_touching_redis(client, settings, request_from):
    """Anyone hammering /healthz must not cost a channel-layer round trip each time."""
    settings.CHANNEL_LAYERS = layers_using(settings.CHANNEL_LAYERS, "redis://127.0.0.1:9/0")

    response = client.get("/healthz", **request_from)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response.headers["Cache-Control"]


def test_healthz_in_full_for_the_monitoring_networks(client, settings, redis_client):
    settings.CHATSTACK_METRICS_ALLOWED_NETWORKS = (ipaddress.ip_network("10.20.0.0/16"),)
    full = client.get("/healthz", REMOTE_ADDR="10.20.3.4").json()
    assert full == {"status": "ok", "database": "ok", "channel_layer": "ok"}
    assert client.get("/healthz", REMOTE_ADDR="127.0.0.1").json() == {"status": "ok"}
