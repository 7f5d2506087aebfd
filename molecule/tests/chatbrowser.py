"""A real browser for the end-to-end tests: Playwright driving Debian's chromium.

Playwright never downloads a browser here (no `playwright install`): the
`chromium` package from apt is launched by path, with its phone-home features
off, so the tests need no network beyond the test host.
"""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from chatclient import PASSWORD
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    # Containers and CI runners rarely allow the user namespaces the sandbox needs.
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts"

# Keeps every connection state the page passes through: a "reconnecting" that
# lasts less than a poll interval would otherwise go unseen.
RECORD_STATES = """
window.chatStates = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("connection-state");
  if (!el) return;
  window.chatStates.push(el.dataset.state);
  new MutationObserver(() => window.chatStates.push(el.dataset.state))
    .observe(el, { attributes: true, attributeFilter: ["data-state"] });
});
"""

# Counts the history frames the page's sockets received ("connected" shows
# when the socket opens, a moment before the room's newest messages arrive),
# and logs each socket's opening and closing, so that a page that never
# connects says what it saw.
RECORD_SOCKETS = """
window.chatHistories = 0;
window.chatSockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    const log = (what) => window.chatSockets.push(`${Math.round(performance.now())} ms: ${what}`);
    log("new");
    this.addEventListener("open", () => log("open"));
    this.addEventListener("error", () => log("error"));
    this.addEventListener("close", (event) => log(`close ${event.code} ${event.reason}`));
    this.addEventListener("message", (event) => {
      if (JSON.parse(event.data).type === "history") window.chatHistories += 1;
    });
  }
};
"""

# Wraps the browser's Notification: the page sees the real permission, the test
# sees each permission request and each notification shown (headless Chromium
# has no desktop to show them on).
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.chatNotifications = [];
  window.chatPermissionRequests = 0;
  window.Notification = class {
    constructor(title, options = {}) {
      window.chatNotifications.push({ title, body: options.body });
    }
    static get permission() { return Real.permission; }
    static requestPermission() {
      window.chatPermissionRequests += 1;
      return Real.requestPermission();
    }
    addEventListener() {}
    close() {}
  };
})();
"""

MESSAGES = """els => els.map(el => ({
  id: Number(el.dataset.id),
  user: el.querySelector(".author").textContent,
  text: el.querySelector(".text").textContent,
}))"""


# Scrolls the log to the top on every poll, which makes the page ask for older
# messages, until it shows the start of the room.
SCROLL_TO_START = """() => {
  const log = document.getElementById("chat-log");
  log.scrollTop = 0;
  return log.querySelector("li.start") !== null && log.dataset.older === "complete";
}"""

# Where a message is, in pixels below the top of the log's visible part.
OFFSET_IN_LOG = """id => {
  const log = document.getElementById("chat-log");
  const item = log.querySelector(`li.message[data-id="${id}"]`);
  return item.getBoundingClientRect().top - log.getBoundingClientRect().top;
}"""
TOP_THEN_OFFSET = f"""id => {{
  document.getElementById("chat-log").scrollTop = 0;
  return ({OFFSET_IN_LOG})(id);
}}"""

# Spends the account's message budget from a second socket of the same session,
# as another tab would: sends until the server refuses one.
SPEND_MESSAGE_BUDGET = """room => new Promise((resolve, reject) => {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/chat/${room}/`);
  let sent = 0;
  const next = () => socket.send(JSON.stringify({ message: `budget ${++sent}` }));
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "history") next();
    if (frame.type === "message" && frame.message === `budget ${sent}`) next();
    if (frame.type === "error") { socket.close(); resolve(sent - 1); }
  };
  socket.onclose = (event) => reject(new Error(`closed early (${event.code})`));
})"""

# Someone typing messages one after the other, run by the page on its own
# timer while the test's thread does something else. As a person would: the
# next only once the box is free again (its echo came, or it moved to the
# outbox), and a refused one sent again as it stands in the box.
TYPE_MESSAGES = """([texts, interval]) => {
  const box = document.getElementById("chat-message-input");
  const refusal = document.getElementById("chat-refusal");
  let next = 0;
  const type = () => {
    if (box.readOnly) {
      setTimeout(type, 100);
      return;
    }
    if (refusal.hidden && next === texts.length) return;
    if (refusal.hidden) {
      box.value = texts[next];
      next += 1;
    }
    box.form.requestSubmit();
    setTimeout(type, interval);
  };
  type();
}"""

# Page Visibility as when the reader switches to another tab (headless
# Chromium keeps every tab visible).
SET_HIDDEN = """hidden => {
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@contextlib.contextmanager
def running_chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, never a browser Playwright would download."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class ChatUser:
    """One person in one browser profile (context): own cookies, one tab."""

    def __init__(self, browser: Browser, base_url: str, username: str, locale: str = "en-US"):
        self.base_url = base_url
        self.username = username
        # The test host's certificate is self-signed. The locale is what the
        # browser asks for in Accept-Language.
        self.context = browser.new_context(ignore_https_errors=True, locale=locale)
        self.context.add_init_script(RECORD_STATES)
        self.context.add_init_script(RECORD_NOTIFICATIONS)
        self.context.add_init_script(RECORD_SOCKETS)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", self._on_dialog)
        self.room: str | None = None

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)

    def adopt_session(self, session_key: str) -> None:
        """Signs in with a session made on the host (chatclient.sessions_made_on)."""
        self.context.add_cookies(
            [{"name": "sessionid", "value": session_key, "url": self.base_url, "secure": True}]
        )

    def signup(self) -> None:
        self.goto("/accounts/signup/")
        self.page.fill("#id_username", self.username)
        self.page.fill("#id_password1", PASSWORD)
        self.page.fill("#id_password2", PASSWORD)
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Create account").click()
        assert self.page.url.endswith("/chat/"), self.page.content()[:2000]

    def open_room(self, room: str, timeout: float = 30) -> None:
        """Opens the room's page and waits until it shows the room's messages."""
        self.room = room
        self.goto(f"/chat/{room}/")
        self.wait_for_history(timeout)

    def reload(self, timeout: float = 30) -> None:
        """Reloads the page and waits until it shows the room's messages again."""
        self.page.reload()
        self.wait_for_history(timeout)

    def wait_for_history(self, timeout: float) -> None:
        # "connected" shows when the socket opens, a moment before the room's
        # newest messages arrive: a test reading the log, or cutting the
        # connection, in between found the page empty (a loaded machine).
        self.wait_connected(timeout)
        self.page.wait_for_function("() => window.chatHistories > 0", timeout=timeout * 1000)

    @property
    def state(self) -> str:
        return self.page.get_attribute("#connection-state", "data-state")

    def states(self) -> list[str]:
        return self.page.evaluate("window.chatStates")

    def wait_state(self, state: str, timeout: float, seen_after: int = 0) -> None:
        """Waits until the page has shown `state` after the first `seen_after` states it had."""
        self.page.wait_for_function(
            "([state, after]) => window.chatStates.slice(after).includes(state)",
            arg=[state, seen_after],
            timeout=timeout * 1000,
        )

    def wait_connected(self, timeout: float) -> None:
        try:
            self.page.wait_for_selector(
                '#connection-state[data-state="connected"]', timeout=timeout * 1000
            )
        except PlaywrightTimeout as error:
            sockets = self.page.evaluate("window.chatSockets")
            raise AssertionError(
                f"not connected after {timeout} s; states {self.states()}; sockets {sockets}"
            ) from error

    def send(self, text: str) -> None:
        self.page.fill("#chat-message-input", text)
        self.page.press("#chat-message-input", "Enter")

    def type_messages(self, texts: list[str], interval: float) -> None:
        """Starts typing `texts`, one every `interval` seconds; returns at once."""
        self.page.evaluate(TYPE_MESSAGES, [texts, interval * 1000])

    def wait_until_sent(self, timeout: float) -> None:
        """Waits until nothing the page holds is waiting for the server (no pending message)."""
        self.page.wait_for_function(
            "() => !document.querySelector('#chat-log li.pending')", timeout=timeout * 1000
        )

    def scroll_back_to_start(self, timeout: float = 60) -> None:
        self.page.wait_for_function(SCROLL_TO_START, polling=250, timeout=timeout * 1000)

    def load_one_older_page(self, timeout: float = 30) -> tuple[float, float]:
        """Scrolls to the top once; returns where the message that was first is
        shown before and after the older page arrived."""
        shown = self.messages()
        before = self.page.evaluate(TOP_THEN_OFFSET, shown[0]["id"])
        self.page.wait_for_function(
            "count => document.querySelectorAll('#chat-log li.message').length > count",
            arg=len(shown),
            timeout=timeout * 1000,
        )
        return before, self.page.evaluate(OFFSET_IN_LOG, shown[0]["id"])

    def spend_message_budget(self) -> int:
        """Sends from another socket until the account is rate limited; returns how many went."""
        return self.page.evaluate(SPEND_MESSAGE_BUDGET, self.room)

    def set_hidden(self, hidden: bool) -> None:
        self.page.evaluate(SET_HIDDEN, hidden)

    def notifications(self) -> list[dict]:
        """The desktop notifications the page showed, as {title, body}."""
        return self.page.evaluate("window.chatNotifications")

    def permission_requests(self) -> int:
        return self.page.evaluate("window.chatPermissionRequests")

    @property
    def box_text(self) -> str:
        return self.page.input_value("#chat-message-input")

    def messages(self) -> list[dict]:
        return self.page.eval_on_selector_all("#chat-log li.message", MESSAGES)

    def wait_for_message(self, text: str, timeout: float = 15) -> dict:
        self.page.wait_for_function(
            """text => [...document.querySelectorAll("#chat-log li.message .text")]
                   .some(el => el.textContent === text)""",
            arg=text,
            timeout=timeout * 1000,
        )
        return next(message for message in self.messages() if message["text"] == text)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def screenshots_light_and_dark(self, name: str) -> None:
        for scheme in ("light", "dark"):
            self.page.emulate_media(color_scheme=scheme)
            self.screenshot(f"{name}-{scheme}")
        self.page.emulate_media(color_scheme=None)

    def close(self) -> None:
        self.context.close()


class SocketSwitch:
    """Cuts a page's chat connections and lets them through again, as a server that
    goes away and comes back: while cut, every new connection closes at once."""

    def __init__(self, page):
        self.down = False
        self.open: list = []
        page.route_web_socket("**/ws/chat/**", self._route)

    def _route(self, websocket) -> None:
        if self.down:
            websocket.close()
            return
        websocket.connect_to_server()
        self.open.append(websocket)

    def cut(self) -> None:
        self.down = True
        while self.open:
            self.open.pop().close()

    def restore(self) -> None:
        self.down = False


def open_room_then_lose_the_server(user: ChatUser, room: str, meanwhile=None) -> SocketSwitch:
    """Opens the room, runs `meanwhile` if given, then cuts its connection as a server
    that goes away would, until the page says it is reconnecting; the switch's
    restore() brings the server back."""
    switch = SocketSwitch(user.page)
    user.open_room(room)
    if meanwhile is not None:
        meanwhile()
    seen = len(user.states())
    switch.cut()
    user.wait_state("reconnecting", timeout=10, seen_after=seen)
    return switch


def chat_until_delivered(sender: ChatUser, receiver: ChatUser, label: str, deadline: float) -> int:
    """Sends numbered probes until one reaches the receiver; returns how many were sent.

    Each probe waits for the sender to be connected, as a person would, and
    gets a few seconds to arrive before the next one is tried.
    """
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{label}: no message got through ({attempt - 1} probes sent)"
        sender.wait_connected(remaining)
        text = f"{label} probe {attempt}"
        sender.send(text)
        try:
            receiver.wait_for_message(text, timeout=min(5, max(remaining, 0.1)))
            return attempt
        except PlaywrightTimeout:
            continue
