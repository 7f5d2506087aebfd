"""Two people chat in real browsers, through Nginx, as a user would."""

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
