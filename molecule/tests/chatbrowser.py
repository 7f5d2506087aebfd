"""A real browser for the end-to-end tests: Playwright driving Debian's chromium.

Playwright never downloads a browser here (no `playwright install`): the
`chromium` package from apt is launched by path, with its phone-home features
off, so the tests need no network beyond the test host.
"""

import time
from pathlib import Path

from chatclient import PASSWORD
from playwright.sync_api import Browser, Playwright
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

MESSAGES = """els => els.map(el => ({
  id: Number(el.dataset.id),
  user: el.querySelector(".author").textContent,
  text: el.querySelector(".text").textContent,
}))"""


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class ChatUser:
    """One person in one browser profile (context): own cookies, one tab."""

    def __init__(self, browser: Browser, base_url: str, username: str):
        self.base_url = base_url
        self.username = username
        # The test host's certificate is self-signed.
        self.context = browser.new_context(ignore_https_errors=True)
        self.context.add_init_script(RECORD_STATES)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", self._on_dialog)
        self.room: str | None = None

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)

    def signup(self) -> None:
        self.goto("/accounts/signup/")
        self.page.fill("#id_username", self.username)
        self.page.fill("#id_password1", PASSWORD)
        self.page.fill("#id_password2", PASSWORD)
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Create account").click()
        assert self.page.url.endswith("/chat/"), self.page.content()[:2000]

    def open_room(self, room: str, timeout: float = 30) -> None:
        self.room = room
        self.goto(f"/chat/{room}/")
        self.wait_connected(timeout)

    def reload(self, timeout: float = 30) -> None:
        self.page.reload()
        self.wait_connected(timeout)

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
        self.page.wait_for_selector(
            '#connection-state[data-state="connected"]', timeout=timeout * 1000
        )

    def send(self, text: str) -> None:
        self.page.fill("#chat-message-input", text)
        self.page.press("#chat-message-input", "Enter")

    def messages(self) -> list[dict]:
        return self.page.eval_on_selector_all("#chat-log li.message", MESSAGES)

    def wait_for_message(self, text: str, timeout: float = 15) -> dict:
        self.page.wait_for_function(
            """text => [...document.querySelectorAll("#chat-log .text")]
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

    def close(self) -> None:
        self.context.close()


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
