"""A minimal chat client: the HTTP and WebSocket calls a browser makes."""

import asyncio
import http.cookiejar
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


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

    def signup(self, username: str, password: str = "correct horse battery 9") -> None:
        status, _, page = self.request("/accounts/signup/")
        assert status == 200, page
        token = CSRF_INPUT.search(page).group(1)
        status, _, page = self.request(
            "/accounts/signup/",
            {
                "csrfmiddlewaretoken": token,
                "username": username,
                "password1": password,
                "password2": password,
            },
        )
        assert status == 302, f"signup failed ({status}): {page[:2000]}"

    def websocket(self, room: str):
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.cookies)
        url = self.site.base_url.replace("https://", "wss://") + f"/ws/chat/{room}/"
        return connect(
            url,
            ssl=self.site.tls_context,
            origin=self.site.base_url,
            additional_headers={"Cookie": cookie},
            open_timeout=15,
        )


async def next_of_type(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next frame of the given type, skipping others (presence, history)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame
