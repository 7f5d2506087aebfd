"""English and Simplified Chinese: pages, the language switcher, the server's error frames."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.timesince import timesince
from django.views.defaults import server_error

from chatstack.chat.models import Message, Profile

from .conftest import session_cookie_of
from .wsutil import joined, receive

pytestmark = pytest.mark.django_db

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-CN,zh;q=0.9,en;q=0.5"}
EN = {"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.8"}
# An English word: what a page in Chinese shows only as data (names), never as UI.
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
BRAND = "Chatstack"
# The lobby's full dates name their time zone, the same in every language.
ZONE = "UTC"
# Elements with no end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
# Text in these is never UI prose: code, styles, and keys named as printed on them.
UNSPOKEN = {"script", "style", "kbd"}
# Attributes a reader sees or a screen reader speaks.
SPOKEN_ATTRIBUTES = {"placeholder", "title", "aria-label", "alt"}


class VisibleText(HTMLParser):
    """The strings of a page a reader sees or hears, except those marked with their own `lang`.

    The switcher names each language in itself ("English" on a Chinese page),
    marked with a lang attribute, as is proper for text in another language.
    """

    def __init__(self) -> None:
        super().__init__()
        self.strings: list[str] = []
        # For each open element: whether its text is skipped.
        self.skipping: list[bool] = []

    def skipped(self) -> bool:
        return bool(self.skipping) and self.skipping[-1]

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        skip = self.skipped() or tag in UNSPOKEN or ("lang" in attrs and tag != "html")
        if not skip:
            self.strings += [attrs[name] for name in SPOKEN_ATTRIBUTES if attrs.get(name)]
        if tag not in VOID:
            self.skipping.append(skip)

    def handle_endtag(self, tag) -> None:
        if tag not in VOID and self.skipping:
            self.skipping.pop()

    def handle_data(self, data) -> None:
        if data.strip() and not self.skipped():
            self.strings.append(" ".join(data.split()))


def english_strings(html: str, data: set[str]) -> list[str]:
    """The page's visible strings with an English word once the data in it is removed."""
    parser = VisibleText()
    parser.feed(html)
    found = []
    for string in parser.strings:
        rest = string
        for value in data:
            rest = rest.replace(value, "")
        if LATIN_WORD.search(rest):
            found.append(string)
    return found


@pytest.fixture
def user():
    return get_user_model().objects.create_user("carol", password="carol-password")


def pages(client, user, settings):
    """Every page a person meets, in the states that show the most text: (name, response)."""
    anonymous = Client(**client.defaults)
    yield "login", anonymous.get("/accounts/login/")
    yield "failed login", anonymous.post("/accounts/login/", {"username": "x", "password": "y"})
    yield "signup", anonymous.get("/accounts/signup/")
    yield "refused signup", anonymous.post("/accounts/signup/", {"username": "z"})
    settings.CHATSTACK_SIGNUP = "invite"
    yield "refused invite signup", anonymous.post("/accounts/signup/", {"invite": "nope"})
    settings.CHATSTACK_SIGNUP = "closed"
    yield "closed signup", anonymous.get("/accounts/signup/")
    client.force_login(user)
    Message.objects.create(room="general", author=user, text="hello")
    yield "lobby", client.get("/chat/")
    yield "lobby, bad room name", client.get("/chat/", {"room": "no spaces"})
    yield "room", client.get("/chat/general/")
    yield "missing", client.get("/chat/general/no-such-page/")
    yield "password change", client.post("/accounts/password/", {"old_password": "wrong"})
    yield "password changed", client.get("/accounts/password/done/")


def test_every_page_in_chinese_has_no_english_ui(user, settings):
    """A reader whose browser asks for Chinese sees no English word on any page but names."""
    data = {BRAND, ZONE, user.username, "general"}
    for name, response in pages(Client(**ZH), user, settings):
        assert response.status_code in (200, 403, 404), name
        assert english_strings(response.text, data) == [], f"untranslated on the {name} page"


def test_every_page_in_english_is_english(user, settings):
    """Without Chinese in Accept-Language, pages are English (and the check above can fail)."""
    data = {BRAND, ZONE, user.username, "general"}
    for name, response in pages(Client(**EN), user, settings):
        assert english_strings(response.text, data), f"the {name} page shows no English"
        assert '<html lang="en">' in response.text, name


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_server_error_page_speaks_the_readers_language(rf, language):
    """The page shown when the server fails is in the language the reader's pages are in."""
    with translation.override(language):
        response = server_error(rf.get("/chat/"))
    assert response.status_code == 500
    english = english_strings(response.content.decode(), {BRAND})
    assert bool(english) is (language == "en"), english


def switch_language(client, language: str, next_page: str = "/chat/"):
    """Press a language button of the switcher on `next_page`, as a browser would."""
    page = client.get(next_page).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert f'name="language" value="{language}"' in page, "no switcher button"
    return client.post(
        "/language/", {"language": language, "next": next_page, "csrfmiddlewaretoken": token}
    )


def log_in(client, user) -> None:
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "carol-password"}
    )
    assert response.status_code == 302, "could not log in"


def test_a_visitor_switches_language_without_an_account():
    """The switcher works on the login page, before anyone has an account (CSRF enforced)."""
    client = Client(enforce_csrf_checks=True, **EN)
    response = switch_language(client, "zh-hans", "/accounts/login/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/accounts/login/"
    assert '<html lang="zh-hans">' in client.get("/accounts/login/").text


def test_the_choice_follows_the_account_to_another_browser(user):
    """Chinese chosen at home is the language at work after logging in, whatever it asks for."""
    home = Client(enforce_csrf_checks=True, **EN)
    home.force_login(user)
    switch_language(home, "zh-hans")
    assert '<html lang="zh-hans">' in home.get("/chat/").text

    work = Client(**EN)
    assert '<html lang="en">' in work.get("/accounts/login/").text
    log_in(work, user)
    assert '<html lang="zh-hans">' in work.get("/chat/").text

    switch_language(work, "en")
    assert Profile.objects.get(user=user).language == "en", "switching back was not stored"


def test_a_choice_made_before_signing_up_is_kept_on_the_new_account():
    """Someone who switched to Chinese, then signed up, gets Chinese wherever they log in."""
    visitor = Client(enforce_csrf_checks=True, **EN)
    switch_language(visitor, "zh-hans", "/accounts/signup/")
    password = "a-long-unusual-passphrase"
    response = visitor.post(
        "/accounts/signup/",
        {
            "username": "dora",
            "password1": password,
            "password2": password,
            "csrfmiddlewaretoken": visitor.cookies[settings.CSRF_COOKIE_NAME].value,
        },
    )
    assert response.status_code == 302, "sign-up failed"
    elsewhere = Client(**EN)
    elsewhere.post("/accounts/login/", {"username": "dora", "password": password})
    assert '<html lang="zh-hans">' in elsewhere.get("/chat/").text


def test_an_unknown_language_is_not_stored(user):
    """A forged switcher request with a language the site lacks changes nothing on the account."""
    client = Client(**EN)
    client.force_login(user)
    client.post("/language/", {"language": "fr", "next": "/chat/"})
    assert not Profile.objects.filter(user=user).exclude(language="").exists()
    assert '<html lang="en">' in client.get("/chat/").text


def test_dates_in_the_lobby_use_the_readers_language(user):
    """The lobby's "3 hours ago" and full date are written as the page's language writes them."""
    sent = timezone.now() - timedelta(hours=3, minutes=1)
    Message.objects.create(room="general", author=user, text="hello", created=sent)
    shown = {}
    for language, headers in (("en", EN), ("zh-hans", ZH)):
        client = Client(**headers)
        client.force_login(user)
        page = client.get("/chat/").text
        with translation.override(language):
            shown[language] = [
                timesince(sent),
                date_format(timezone.localtime(sent), "DATETIME_FORMAT"),
            ]
        for text in shown[language]:
            assert text in page, f"{language} page lacks {text!r}"
    assert not set(shown["en"]) & set(shown["zh-hans"]), "dates are written the same in both"


def empty_message_error(language: str) -> str:
    with translation.override(language):
        return translation.gettext("Message is empty.")


async def error_for_empty_message(communicator) -> str:
    await joined(communicator)
    await communicator.send_json_to({"message": " "})
    return (await receive(communicator, "error"))["error"]


async def test_error_frames_speak_the_sockets_language(ws, alice, bob):
    """Sockets opened at once by a Chinese and an English page each get errors in their language."""
    assert empty_message_error("zh-hans") != empty_message_error("en"), "no translation"
    chinese = await ws(alice, headers=[(b"accept-language", b"zh-CN,zh;q=0.9")])
    english = await ws(bob, headers=[(b"accept-language", b"en-US")])
    assert await error_for_empty_message(chinese) == empty_message_error("zh-hans")
    assert await error_for_empty_message(english) == empty_message_error("en")


async def test_the_switchers_choice_beats_accept_language_on_the_socket(ws, alice):
    """Someone who chose Chinese on an English browser gets the socket's errors in Chinese."""
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = session_cookie_of(client) + f"; {settings.LANGUAGE_COOKIE_NAME}=zh-hans".encode()
    communicator = await ws(cookie=cookie, headers=[(b"accept-language", b"en-US")])
    assert await error_for_empty_message(communicator) == empty_message_error("zh-hans")
