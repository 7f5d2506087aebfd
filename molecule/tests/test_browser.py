"""Two people chat in real browsers, through Nginx, as a user would."""

import time
import uuid

from chatbrowser import open_room_then_lose_the_server
from chatclient import store_messages, stored_messages

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def test_two_browsers_chat(chat_user):
    room = f"browser-{uuid.uuid4().hex[:8]}"
    alice, bob = chat_user(sign_up=True), chat_user(sign_up=True)
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


def new_room() -> str:
    return f"browser-{uuid.uuid4().hex[:8]}"


def test_scrolling_back_shows_every_message_once_in_order(chat_user, host, record_time):
    """Someone scrolling up through a long room must see every earlier message,
    none twice and none skipped, and know when they reached the start."""
    room = new_room()
    alice = chat_user()
    texts = [f"old message {i}" for i in range(300)]
    store_messages(host, room, alice.username, texts)
    alice.open_room(room)
    assert len(alice.messages()) < len(texts), "the page should start with the newest only"

    before, after = alice.load_one_older_page()
    assert abs(after - before) < 2, "the reader lost their place when older messages came in"
    started = time.monotonic()
    alice.scroll_back_to_start()
    record_time("scrolled back through 300 messages", time.monotonic() - started)

    shown = alice.messages()
    assert [message["text"] for message in shown] == texts
    ids = [message["id"] for message in shown]
    assert ids == sorted(set(ids)), "messages repeated or out of order"
    alice.screenshots_light_and_dark("browser-scrollback")


def test_a_refused_message_stays_in_the_box_with_its_reason(chat_user):
    """A message the rate limit refused must not vanish: the text stays in the
    box to send again, and the reason is shown next to it."""
    alice = chat_user()
    alice.open_room(new_room())
    assert alice.spend_message_budget() > 0

    alice.send("one too many")

    refusal = alice.page.locator("#chat-refusal")
    refusal.wait_for(state="visible", timeout=10_000)
    assert "Slow down" in refusal.text_content()
    assert alice.box_text == "one too many"
    assert "one too many" not in [message["text"] for message in alice.messages()]


def test_a_message_typed_while_disconnected_arrives_once(chat_user, host):
    """What someone writes while the connection is down is kept, shown as
    pending, and sent exactly once when the connection is back."""
    room = new_room()
    alice = chat_user()
    switch = open_room_then_lose_the_server(alice, room)
    alice.send("written while offline")
    alice.page.locator("#chat-log li.pending").wait_for(timeout=5_000)
    assert alice.box_text == "", "the box should be free for the next message"

    switch.restore()
    alice.wait_for_message("written while offline", timeout=30)
    alice.page.locator("#chat-log li.pending").wait_for(state="detached", timeout=5_000)
    assert [message["text"] for message in stored_messages(host, room)] == ["written while offline"]
    assert [message["text"] for message in alice.messages()] == ["written while offline"]


def test_a_message_typed_while_away_and_refused_for_now_goes_out_later(chat_user, host):
    """What someone wrote while the connection was down, and the server then refused
    for now (here: over the rate limit), must not be stuck with a "try again" nobody
    can act on: the page shows the reason and sends it again by itself, once."""
    room = new_room()
    alice = chat_user()
    switch = open_room_then_lose_the_server(alice, room, meanwhile=alice.spend_message_budget)
    alice.send("refused for now")
    alice.page.locator("#chat-log li.pending").wait_for(timeout=5_000)

    switch.restore()
    alice.page.locator("#chat-log li.pending .status", has_text="Slow down").wait_for(
        timeout=30_000
    )
    alice.wait_for_message("refused for now", timeout=30)
    alice.wait_until_sent(timeout=5)
    stored = [message["text"] for message in stored_messages(host, room)]
    assert stored.count("refused for now") == 1
    assert [message["text"] for message in alice.messages()].count("refused for now") == 1


def test_a_reader_away_for_more_than_a_page_misses_nothing(chat_user, host):
    """After a reconnect the server sends only the newest messages; whatever
    was posted before them while the reader was away is fetched too."""
    room = new_room()
    alice = chat_user()
    store_messages(host, room, alice.username, [f"before {i}" for i in range(5)])
    switch = open_room_then_lose_the_server(alice, room)
    missed = [f"while away {i}" for i in range(130)]
    store_messages(host, room, alice.username, missed)

    switch.restore()
    alice.wait_for_message(missed[-1], timeout=30)
    alice.page.wait_for_function(
        "() => document.getElementById('chat-log').dataset.older !== 'loading'"
    )

    shown = [message["text"] for message in alice.messages()]
    assert shown == [f"before {i}" for i in range(5)] + missed


def test_the_title_counts_unread_messages_while_hidden(chat_user):
    """Someone in another tab sees in the tab's title that messages arrived."""
    room = new_room()
    alice, bob = chat_user(), chat_user()
    alice.open_room(room)
    bob.open_room(room)
    title = bob.page.title()

    bob.set_hidden(True)
    alice.send("are you there?")
    alice.send("hello?")
    bob.wait_for_message("hello?")
    bob.page.wait_for_function("title => document.title === `(2) ${title}`", arg=title)

    bob.set_hidden(False)
    bob.page.wait_for_function("title => document.title === title", arg=title)


def test_keyboard_only_send(chat_user):
    """With the keyboard alone: Enter sends, Shift+Enter starts a new line."""
    alice = chat_user()
    alice.open_room(new_room())
    keyboard = alice.page.keyboard
    # The box has the focus from the start: no click needed.
    alice.page.wait_for_function(FOCUS_IN_BOX)

    keyboard.type("first line")
    keyboard.press("Shift+Enter")
    keyboard.type("second line")
    keyboard.press("Enter")

    alice.wait_for_message("first line\nsecond line")
    alice.page.wait_for_function(f"() => ({FOCUS_IN_BOX})() && {BOX}.value === ''")


BOX = "document.getElementById('chat-message-input')"
FOCUS_IN_BOX = f"() => document.activeElement === {BOX}"


def test_a_browser_asking_for_chinese_gets_the_room_in_chinese(chat_user):
    """A reader whose browser asks for Chinese must see the room page, including what its
    script writes (the connection state), in Chinese -- not an English page."""
    reader = chat_user(locale="zh-CN")
    reader.open_room(new_room())
    page = reader.page
    assert page.evaluate("document.documentElement.lang") == "zh-hans"
    strings = page.evaluate("JSON.parse(document.getElementById('chat-strings').textContent)")
    assert page.locator("#connection-state").text_content() == strings["connected"]
    assert any("\u4e00" <= character <= "\u9fff" for character in strings["connected"]), strings
    reader.screenshots_light_and_dark("browser-room-zh-hans")


def test_notifications_are_asked_for_only_after_a_click(chat_user):
    """Nobody is asked to allow notifications by a page they merely opened. Once they turn
    them on, someone else's message while the tab is hidden, and a mention of them at any
    time, shows one: the room as its title, "name: text" (cut short) as its body."""
    room = new_room()
    alice, bob = chat_user(), chat_user()
    alice.open_room(room)
    bob.open_room(room)
    bob.set_hidden(True)
    alice.send("before the click")
    bob.wait_for_message("before the click")
    assert bob.permission_requests() == 0, "the page asked for permission before any click"
    assert bob.page.evaluate("Notification.permission") == "default"
    assert bob.notifications() == [], "notified without being asked to"

    bob.set_hidden(False)
    # Playwright answers the browser's prompt as the reader would: allow.
    bob.context.grant_permissions(["notifications"], origin=bob.base_url)
    bob.page.locator("#notify-toggle").click()
    bob.page.wait_for_selector('#notify-toggle[aria-pressed="true"]', timeout=5_000)
    assert bob.permission_requests() == 1

    bob.set_hidden(True)
    long_text = "long " * 60
    alice.send("while you are away")
    alice.send(long_text)
    bob.wait_for_message(long_text)
    bob.set_hidden(False)
    bob.send("my own")
    alice.send("read on screen")
    alice.send(f"@{bob.username} look")
    bob.wait_for_message(f"@{bob.username} look")

    notes = bob.notifications()
    assert {note["title"] for note in notes} == {room}
    bodies = [note["body"] for note in notes]
    assert bodies[0] == f"{alice.username}: while you are away"
    assert bodies[1].startswith(f"{alice.username}: long long") and bodies[1].endswith("…")
    assert len(bodies[1]) < len(long_text), "a long message was not cut short"
    assert bodies[2:] == [f"{alice.username}: @{bob.username} look"], (
        "a visible page notified of an ordinary message, or of the reader's own"
    )


def test_a_message_waiting_in_the_outbox_survives_a_reload(chat_user, host):
    """Someone who reloads the page while a message waits for the server must lose
    neither it nor the text still in the box: the message is sent exactly once when
    the server is back, and a later reload sends nothing again."""
    room = new_room()
    alice = chat_user()
    switch = open_room_then_lose_the_server(alice, room)
    alice.send("written before the reload")
    alice.page.locator("#chat-log li.pending").wait_for(timeout=5_000)
    alice.page.fill("#chat-message-input", "not sent yet")

    alice.page.reload()
    pending = alice.page.locator("#chat-log li.pending .text")
    pending.wait_for(timeout=10_000)
    assert pending.all_text_contents() == ["written before the reload"]
    assert alice.box_text == "not sent yet", "the text in the box was lost"

    switch.restore()
    alice.wait_for_message("written before the reload", timeout=30)
    alice.page.locator("#chat-log li.pending").wait_for(state="detached", timeout=5_000)
    alice.reload()
    assert [message["text"] for message in alice.messages()] == ["written before the reload"]
    stored = [message["text"] for message in stored_messages(host, room)]
    assert stored == ["written before the reload"], "the message was lost or stored twice"
    assert alice.box_text == "not sent yet"
