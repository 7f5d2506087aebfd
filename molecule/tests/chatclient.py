"""A minimal chat client: the HTTP and WebSocket calls a browser makes."""

import asyncio
import http.cookiejar
import json
import re
import shlex
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosed

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
PASSWORD = "correct horse battery 9"


class ChatSite:
    def __init__(self, base_url: str, tls_context: ssl.SSLContext):
        self.base_url = base_url
        self.tls_context = tls_context

    def session(self) -> "Browser":
        return Browser(self)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """One user's cookies, like one browser profile."""

    def __init__(self, site: ChatSite):
        self.site = site
        self.username: str | None = None
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=site.tls_context),
            urllib.request.HTTPCookieProcessor(self.cookies),
            NoRedirect(),
        )

    def request(self, path: str, data: dict | None = None) -> tuple[int, dict, str]:
        """Returns status, headers and body; redirects are returned, not followed."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.site.base_url + path, data=body)
        request.add_header("Origin", self.site.base_url)
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def post_form(self, path: str, fields: dict) -> tuple[int, dict, str]:
        """Submits the form on `path` as a browser would, with the page's CSRF token."""
        status, _, page = self.request(path)
        assert status == 200, page
        token = CSRF_INPUT.search(page).group(1)
        return self.request(path, {"csrfmiddlewaretoken": token, **fields})

    def signup(self, username: str, password: str = PASSWORD) -> None:
        status, _, page = self.post_form(
            "/accounts/signup/",
            {"username": username, "password1": password, "password2": password},
        )
        assert status == 302, f"signup failed ({status}): {page[:2000]}"
        self.username = username

    def login(self, username: str, password: str = PASSWORD) -> None:
        status, _, page = self.post_form(
            "/accounts/login/", {"username": username, "password": password}
        )
        assert status == 302, f"login failed ({status}): {page[:2000]}"
        self.username = username

    def adopt_session(self, username: str, session_key: str) -> None:
        """Becomes a browser signed in with a session made on the host (accounts_made_on)."""
        self.username = username
        self.cookies.set_cookie(
            http.cookiejar.Cookie(
                version=0,
                name="sessionid",
                value=session_key,
                port=None,
                port_specified=False,
                domain=urllib.parse.urlsplit(self.site.base_url).hostname,
                domain_specified=False,
                domain_initial_dot=False,
                path="/",
                path_specified=True,
                secure=True,
                expires=None,
                discard=True,
                comment=None,
                comment_url=None,
                rest={},
            )
        )

    @property
    def session_key(self) -> str:
        """The session cookie: a real browser signs in with it (ChatUser.adopt_session)."""
        return next(cookie.value for cookie in self.cookies if cookie.name == "sessionid")

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in self.cookies)}

    def websocket(self, room: str, **options):
        url = self.site.base_url.replace("https://", "wss://") + f"/ws/chat/{room}/"
        return connect(
            url,
            ssl=self.site.tls_context,
            origin=self.site.base_url,
            additional_headers=self.cookie_header(),
            open_timeout=15,
            **options,
        )

    def websocket_via(self, unix_socket: str, room: str, **options):
        """A WebSocket straight to one Daphne process, through a relay's unix socket.

        It skips Nginx (so the client is pinned to that process), but not the app's
        checks: the Host, Origin and session are the ones the site's pages use.
        """
        host = urllib.parse.urlsplit(self.site.base_url).hostname
        # With options["ssl"] (a cluster's Daphne): TLS through the relay.
        scheme = "wss" if options.get("ssl") else "ws"
        return unix_connect(
            unix_socket,
            f"{scheme}://{host}/ws/chat/{room}/",
            origin=self.site.base_url,
            additional_headers=self.cookie_header(),
            open_timeout=15,
            **options,
        )


async def next_of_type(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next frame of the given type, skipping others (presence, history)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


def post_once(user: Browser, room: str, text: str) -> dict:
    """Opens the room, posts `text` and returns the message frame the server echoes."""

    async def post() -> dict:
        async with user.websocket(room) as socket:
            await next_of_type(socket, "history")
            await socket.send(json.dumps({"message": text}))
            return await next_of_type(socket, "message")

    return asyncio.run(post())


async def refusal(ws, timeout: float = 10.0) -> tuple[str, int | None] | None:
    """None once the socket's history shows the server admitted it; or else the
    error frame it was refused with and the code it was then closed with."""
    async with asyncio.timeout(timeout):
        while (frame := json.loads(await ws.recv()))["type"] not in ("history", "error"):
            pass
        if frame["type"] == "history":
            return None
        try:
            unexpected = await ws.recv()
        except ConnectionClosed as closed:
            return frame["error"], closed.rcvd.code if closed.rcvd else None
    raise AssertionError(f"refused with {frame['error']!r}, yet still open: {unexpected!r}")


async def history(session, room: str) -> list[dict]:
    """The messages a room shows to `session` when it joins."""
    async with session.websocket(room) as ws:
        return (await next_of_type(ws, "history"))["messages"]


async def chat(alice, bob, room: str, lines: list[str]) -> None:
    """alice and bob take turns saying `lines` in `room`, each line seen by the other."""
    async with alice.websocket(room) as ws_a, bob.websocket(room) as ws_b:
        await next_of_type(ws_a, "history")
        await next_of_type(ws_b, "history")
        for n, line in enumerate(lines):
            sender, receiver = (ws_a, ws_b) if n % 2 == 0 else (ws_b, ws_a)
            await sender.send(json.dumps({"message": line}))
            while (await next_of_type(receiver, "message"))["message"] != line:
                pass


@dataclass
class Drill:
    """Two people who chatted in a room of their own before a drill's data loss."""

    alice: Browser
    bob: Browser
    room: str
    stored: list[dict]


def chatted_before_the_drill(site, host) -> Drill:
    """New accounts alice and bob say three lines in a new room; `stored` is what
    `host`'s database holds of them."""
    tag = uuid.uuid4().hex[:8]
    alice, bob = site.session(), site.session()
    alice.signup(f"alice{tag}")
    bob.signup(f"bob{tag}")
    room = f"drill-{tag}"
    asyncio.run(chat(alice, bob, room, ["before the backup", "kept?", "ünïcödé ✓"]))
    return Drill(alice, bob, room, stored_messages(host, room))


def assert_chat_is_back(site, drill: Drill) -> None:
    """After a restore: alice's session from before still holds, and bob, logging in
    again, sees the room's messages (as the database held them) in order."""
    status, _, _ = drill.alice.request("/chat/")
    assert status == 200, "the session from before the backup is not valid any more"
    relogged = site.session()
    relogged.login(drill.bob.username)
    shown = asyncio.run(history(relogged, drill.room))
    assert [m["message"] for m in shown] == [m["text"] for m in drill.stored]


def manage_shell(host, code: str):
    """What `code`, run by the operator's `chatstack-manage shell`, printed last, as JSON."""
    output = host.check_output(f"chatstack-manage shell -c {shlex.quote(code)}")
    # The shell prints a line about its automatic imports first.
    return json.loads(output.splitlines()[-1])


def stored_messages(host, room: str) -> list[dict]:
    """What the host's database holds for a room, read with the operator's command."""
    code = (
        "import json; from chatstack.chat.models import Message; "
        f"print(json.dumps(list(Message.objects.filter(room={room!r}).order_by('id')"
        ".values('id', 'author__username', 'text'))))"
    )
    return manage_shell(host, code)


def posted_by(host, username: str) -> list[tuple[str, float]]:
    """(room, time stored as a Unix timestamp) of each message the account has posted."""
    return manage_shell(
        host,
        "import json; from chatstack.chat.models import Message; "
        "print(json.dumps([(m.room, m.created.timestamp()) for m in "
        f"Message.objects.filter(author__username={username!r}).order_by('id')]))",
    )


def store_messages(host, room: str, username: str, texts: list[str]) -> None:
    """Puts messages of `username` straight into the host's database, oldest first:
    more than the rate limit lets a test post."""
    code = (
        "import json; from django.contrib.auth import get_user_model; "
        "from chatstack.chat.models import Message; "
        f"author = get_user_model().objects.get(username={username!r}); "
        "Message.objects.bulk_create([Message(room=ROOM, author=author, text=text) "
        "for text in json.loads(TEXTS)])"
    )
    code = f"ROOM = {room!r}; TEXTS = {json.dumps(json.dumps(texts))}; " + code
    host.check_output(f"chatstack-manage shell -c {shlex.quote(code)}")


# The operator's way to make accounts and sessions: more than the sign-up
# page's per-address rate limit lets a test make.
MAKE_ACCOUNTS = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
sessions = {}
for name in json.loads(NAMES):
    user = get_user_model().objects.create_user(name)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    sessions[name] = session.session_key
print(json.dumps(sessions))
"""


def sessions_made_on(host, names: list[str]) -> dict[str, str]:
    """A new account for each of `names`, made on the host: {name: its session key}."""
    code = f"NAMES = {json.dumps(json.dumps(names))}" + MAKE_ACCOUNTS
    return manage_shell(host, code)


def accounts_made_on(host, site: ChatSite, names: list[str]) -> list[Browser]:
    """A signed-in browser for each of `names`, new accounts made on the host."""
    sessions = sessions_made_on(host, names)
    browsers = []
    for name in names:
        browser = site.session()
        browser.adopt_session(name, sessions[name])
        browsers.append(browser)
    return browsers
