"""Two people chat in real browsers, through Nginx, as a user would."""

import time
import uuid

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def test_two_browsers_chat(chat_user):
    room = f"browser-{uuid.uuid4().hex[:8]}"
    alice, bob = chat_user(), chat_user()
    alice.open_room(room)
    bob.open_room(room)

    alice.send("hello from the browser")
    seen = bob.wait_for_message("hello from the browser")
    assert seen["user"] == alice.username

    alice.send(XSS)
    seen = bob.wait_for_message(XSS)
    assert seen["user"] == alice.username
    alice.wait_for_message(XSS)
    for user in (alice, bob):
        # Shown as text: nothing was parsed into elements or run.
        assert user.page.locator("#chat-log img, #chat-log script").count() == 0
        assert user.dialogs == []

    bob.reload()
    history = [(message["user"], message["text"]) for message in bob.messages()]
    assert history == [(alice.username, "hello from the browser"), (alice.username, XSS)]
    assert bob.page.locator("#chat-log img, #chat-log script").count() == 0
    assert bob.dialogs == []

    alice.screenshot("browser-alice")
    bob.screenshot("browser-bob")


def test_logging_out_closes_the_chat_in_the_other_tabs(chat_user, record_time):
    """Someone who logs out on a shared computer must not leave a tab that still
    reads and posts as them: its socket is closed and it shows the login page."""
    room = f"browser-{uuid.uuid4().hex[:8]}"
    alice = chat_user()
    alice.open_room(room)
    other_tab = alice.context.new_page()
    other_tab.goto(f"{alice.base_url}/chat/{room}/")
    other_tab.wait_for_selector('#connection-state[data-state="connected"]', timeout=30_000)

    started = time.monotonic()
    with alice.page.expect_navigation():
        alice.page.get_by_role("button", name="Log out").click()
    other_tab.wait_for_url("**/accounts/login/**", timeout=5_000)
    record_time("logout closed the chat in another tab", time.monotonic() - started)
