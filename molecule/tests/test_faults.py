"""Faults on a live host: the chat recovers by itself and no stored message is lost.

Two people stay in one room in real browsers for the whole module while
services are killed, restarted or stopped underneath them. Each recovery time
is measured from the fault and printed; the assertions are about behaviour,
with generous bounds, because this runs on small shared machines.
"""

import time
import uuid

import pytest
from chatbrowser import chat_until_delivered
from chatclient import stored_messages
from hostmetrics import app_metrics
from testhost import (
    DAPHNE,
    UNITS,
    daphne_units,
    main_pid,
    podman,
    published_https_url,
    systemd_state,
)
from waiting import wait_until

pytestmark = pytest.mark.destructive

RECOVERY_TIMEOUT = 60


@pytest.fixture(scope="module")
def pair(chat_user):
    room = f"faults-{uuid.uuid4().hex[:8]}"
    alice, bob = chat_user(), chat_user()
    alice.open_room(room)
    bob.open_room(room)
    return alice, bob


def assert_nothing_lost(host, users) -> None:
    """Every page shows each stored message of the room exactly once, and nothing else."""
    stored = [message["id"] for message in stored_messages(host, users[0].room)]
    for user in users:
        shown = [message["id"] for message in user.messages()]
        assert len(shown) == len(set(shown)), f"{user.username} shows a message twice: {shown}"
        assert shown == stored, f"{user.username}: shown {shown}, stored {stored}"


def test_daphne_killed(host, pair, record_time):
    alice, bob = pair
    alice.send("before the kill")
    bob.wait_for_message("before the kill")
    # Every process of the pool, so that both browsers lose their connection
    # whichever process Nginx gave them.
    pids = {unit: main_pid(host, unit) for unit in daphne_units(host)}
    states_before = [len(user.states()) for user in pair]

    start = time.monotonic()
    host.run_expect([0], f"kill -9 {' '.join(map(str, pids.values()))}")
    for user, seen in zip(pair, states_before, strict=True):
        user.wait_state("reconnecting", RECOVERY_TIMEOUT, seen_after=seen)
    for user in pair:
        user.wait_connected(RECOVERY_TIMEOUT)
    record_time("recovery, daphne kill -9: both browsers reconnected", time.monotonic() - start)
    chat_until_delivered(alice, bob, "after the kill", start + RECOVERY_TIMEOUT)
    record_time("recovery, daphne kill -9: chat delivers", time.monotonic() - start)

    for unit, pid in pids.items():
        assert main_pid(host, unit) not in (0, pid), f"{unit} was not restarted"
    bob.wait_for_message("before the kill")
    assert_nothing_lost(host, pair)


def test_redis_restarted(host, pair, record_time):
    alice, bob = pair
    daphne = main_pid(host, DAPHNE)

    start = time.monotonic()
    host.run_expect([0], "systemctl restart redis-server")
    chat_until_delivered(alice, bob, "after redis", start + RECOVERY_TIMEOUT)
    chat_until_delivered(bob, alice, "reply after redis", start + RECOVERY_TIMEOUT)
    record_time("recovery, redis restart: chat delivers both ways", time.monotonic() - start)

    assert main_pid(host, DAPHNE) == daphne, "the app had to be restarted"
    # Messages stored while the channel layer was gone reach pages through history.
    for user in pair:
        user.reload()
    assert_nothing_lost(host, pair)


def test_redis_connections_cut_while_chatting(host, pair, record_time):
    """The PubSub layer does not hear what is published while it reconnects
    (django/channels_redis#256); both pages show every message anyway, unreloaded."""
    alice = pair[0]
    recovered = "chatstack_messages_recovered_total"
    before = app_metrics(host)[recovered]
    cut = 0
    for index in range(20):
        if index % 4 == 0:
            # Every connection between the app and Redis, from the kernel's side.
            killed = host.check_output("ss -K -Htn state established '( dport = :6379 )'")
            cut += len(killed.splitlines())
        alice.send(f"while cut {index}")
        time.sleep(0.2)
    assert cut > 0, "no connection to Redis was cut: the test tested nothing"

    start = time.monotonic()

    def every_page_shows_what_is_stored() -> bool:
        stored = [message["id"] for message in stored_messages(host, alice.room)]
        return all([m["id"] for m in user.messages()] == stored for user in pair)

    wait_until(every_page_shows_what_is_stored, RECOVERY_TIMEOUT, "pages still miss messages")
    record_time("recovery, redis connections cut: every message shown", time.monotonic() - start)
    assert_nothing_lost(host, pair)
    # Since redis-py retries on a fresh connection, the layer often resubscribes in time
    # and loses nothing; what it did lose came from the database (counted here).
    print(f"{cut} connections cut, {app_metrics(host)[recovered] - before:.0f} messages recovered")


def test_uwsgi_stopped(host, pair, site, record_time):
    alice, bob = pair
    host.run_expect([0], "systemctl stop chatstack-uwsgi.socket chatstack-uwsgi.service")
    try:
        status, _, _ = site.session().request("/accounts/login/")
        assert status in (502, 503)
        # WebSockets are Daphne's: open chats carry on without the page server.
        alice.send("while pages are down")
        bob.wait_for_message("while pages are down")
    finally:
        start = time.monotonic()
        host.run_expect([0], "systemctl start chatstack-uwsgi.socket chatstack-uwsgi.service")

    wait_until(
        lambda: site.session().request("/accounts/login/")[0] == 200,
        RECOVERY_TIMEOUT,
        "pages answer 200 again",
        interval=0.2,
    )
    record_time("recovery, uwsgi started again: pages answer 200", time.monotonic() - start)
    for user in pair:
        user.reload()
    assert_nothing_lost(host, pair)


def test_host_restarted(host, container, pair, record_time):
    alice, bob = pair
    alice.send("before the host restart")
    bob.wait_for_message("before the host restart")
    name = container

    start = time.monotonic()
    podman("restart", name)
    booted = systemd_state(name, timeout=RECOVERY_TIMEOUT)
    record_time("recovery, podman restart: systemd up", time.monotonic() - start)
    failed = host.check_output("systemctl --failed --no-legend --plain")
    assert booted == "running", f"{booted}: {failed}"
    for unit in UNITS:
        service = host.service(unit)
        assert service.is_enabled, unit
        assert service.is_running, unit

    # Podman may publish the port anew.
    base_url = published_https_url(name)
    for user in pair:
        user.base_url = base_url
        user.open_room(user.room, timeout=RECOVERY_TIMEOUT)
    chat_until_delivered(alice, bob, "after the host restart", start + 2 * RECOVERY_TIMEOUT)
    record_time("recovery, podman restart: chat delivers", time.monotonic() - start)
    bob.wait_for_message("before the host restart")
    assert_nothing_lost(host, pair)
    alice.screenshot("faults-alice")
    bob.screenshot("faults-bob")
