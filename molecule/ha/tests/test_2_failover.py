"""Losing the Redis master's host under chat traffic: chat resumes, nothing is lost.

The host is frozen (podman pause): it answers nothing and resets no
connection, as a host that lost power or network, and keeps its address for
test_3_rejoin.py, which runs after this module (pytest takes them by name).
Podman 4 gives a stopped and started container a new address, which no real
server gets from a reboot.
"""

from conftest import APP, REDIS_HOSTS, master_of
from failover import USERS, assert_nothing_lost_or_doubled, chat_through, summary
from testhost import podman


def test_killing_the_master_host_loses_no_message(site, new_users, app_password):
    """Otherwise losing the Redis master's host stops chat, or loses or doubles messages."""
    master = master_of(app_password)

    def kill():
        podman("pause", master)

    members, room, resumed = chat_through(new_users(USERS), kill)
    print(f"Redis master {master} frozen: chat resumed after {resumed:.1f}s ({summary(members)})")

    assert_nothing_lost_or_doubled(members, room, APP)
    survivor = next(host for host in REDIS_HOSTS if host != master)
    assert master_of(app_password, among=[APP, survivor]) == survivor, (
        "the sentinels elected no new master"
    )
