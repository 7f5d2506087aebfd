"""PostgreSQL on two hosts under Patroni: the primary's host stops under chat
traffic, comes back as a replica, a primary cut off from the others stops
taking writes, and a primary's Patroni killed comes back and keeps its role.

After test_2 to test_4 (pytest takes modules by name). The primary's host is
stopped (podman stop: its services shut down as in a power-off by the
operator) and started again at its address, as a server comes back.
"""

import subprocess
import time

from conftest import (
    DB_HOSTS,
    PREFIX,
    SITE_HOSTS,
    STOPPED,
    address,
    following,
    host_left_down,
    primary_of,
    psql,
)
from hachat import USERS, chat_through, members_of_a_new_room, summary
from testhost import podman, podman_result, start_at_address, systemd_state
from waiting import wait_until

# Patroni demotes a primary that cannot renew its lock for retry_timeout (10 s)
# and the others elect one once the lock expires (ttl, 30 s); a generous bound.
DEMOTE_BOUND_SECONDS = 90


def other_db_host(host: str) -> str:
    return next(other for other in DB_HOSTS if other != host)


def test_the_replica_follows_the_primary(site_addresses):
    """Otherwise a failover would find a replica without the recent messages."""
    primary = primary_of()
    replica = other_db_host(primary)
    wait_until(lambda: following(replica), 60, f"{replica} following {primary}")
    streaming = psql(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    assert streaming == "1", f"the primary streams to {streaming} replicas, not one"


def test_stopping_the_primary_host_loses_no_message(site, new_users, person, site_addresses):
    """Otherwise losing the PostgreSQL primary's host stops chat, or loses or doubles messages."""
    primary = primary_of()
    survivor = other_db_host(primary)
    wait_until(lambda: following(survivor), 60, f"{survivor} following {primary}")

    members = members_of_a_new_room(new_users(USERS))

    resumed = chat_through(members, person, lambda: podman("stop", primary))
    print(
        f"PostgreSQL primary {primary} stopped: chat resumed after {resumed:.1f}s"
        f" ({summary(members)})"
    )
    assert primary_of([survivor]) == survivor, "Patroni promoted no replica"


def test_the_stopped_primary_rejoins_as_replica(site_addresses):
    """Otherwise a db host back from a stop splits the cluster, or leaves it without a replica."""
    old_primary = host_left_down(DB_HOSTS, STOPPED, "test_stopping_the_primary_host...")
    primary = primary_of([other_db_host(old_primary)])

    start_at_address(old_primary, PREFIX, site_addresses[old_primary])
    systemd_state(old_primary, 120)
    wait_until(lambda: following(old_primary), 120, f"{old_primary} following {primary}")
    assert primary_of() == primary, "the returning host took the primary role back"


def cut_off(host: str, peers: list[str]) -> None:
    """Drops everything between `host` and `peers`, inside the host: a network split."""
    rules = ", ".join(peers)
    ruleset = (
        "table inet chatstack_test_cut {\n"
        f"  chain input {{ type filter hook input priority -10; ip saddr {{ {rules} }} drop; }}\n"
        f"  chain output {{ type filter hook output priority -10; ip daddr {{ {rules} }} drop; }}\n"
        "}\n"
    )
    subprocess.run(
        ["podman", "exec", "-i", host, "nft", "-f", "-"], input=ruleset, text=True, check=True
    )


def writes(host: str):
    """A write on the host's server that leaves nothing behind (a temporary table), as the
    postgres superuser: the finished psql."""
    return podman_result(
        "exec", "--user", "postgres", host,
        "psql", "-XAtq", "-c", "CREATE TEMPORARY TABLE split_brain_probe (id int)",
    )  # fmt: skip


def test_a_primary_cut_off_from_the_others_refuses_writes(site_addresses):
    """Otherwise a primary on the wrong side of a network split keeps taking writes that the
    other side's new primary never sees: two diverging databases (split brain)."""
    primary = primary_of()
    other = other_db_host(primary)
    wait_until(lambda: following(other), 60, f"{other} following {primary}")
    peers = [address(host) for host in SITE_HOSTS if host != primary]

    cut_off(primary, peers)
    cut = time.monotonic()
    try:
        wait_until(
            lambda: writes(primary).returncode != 0 or None,
            DEMOTE_BOUND_SECONDS,
            f"the cut-off primary {primary} refusing writes",
        )
        refused = time.monotonic() - cut
        wait_until(
            lambda: psql(primary, "SELECT pg_is_in_recovery()") == "t" or None,
            DEMOTE_BOUND_SECONDS,
            f"the cut-off primary {primary} back up as a replica",
        )
        read_only = time.monotonic() - cut
        write = writes(primary)
        assert write.returncode != 0 and "read-only" in write.stderr, (
            f"the cut-off old primary took a write: {write.stdout} {write.stderr}"
        )
        # Until the cut-off primary's lock expires, the other side still reads it as leader.
        wait_until(
            lambda: primary_of([other]) == other or None,
            DEMOTE_BOUND_SECONDS,
            f"the other side electing {other} primary",
        )
        elected = time.monotonic() - cut
        assert psql(other, "SELECT pg_is_in_recovery()") == "f", "the new primary takes no writes"
        print(
            f"PostgreSQL primary {primary} cut off: writes refused after {refused:.1f}s,"
            f" read-only replica after {read_only:.1f}s, {other} primary by {elected:.1f}s"
        )
    finally:
        podman("exec", primary, "nft", "delete", "table", "inet", "chatstack_test_cut")
    # Healing the split must not bring the old primary back as a second one.
    wait_until(lambda: following(primary), 120, f"{primary} back as a replica of {other}")
    assert primary_of() == other, "the old primary took the primary role back"


def patroni_pid(host: str) -> int:
    unit = podman("exec", host, "systemctl", "list-units", "--plain", "--no-legend", "patroni@*")
    return int(podman("exec", host, "systemctl", "show", "-P", "MainPID", unit.split()[0]))


def test_a_primary_whose_patroni_dies_stays_the_one_primary(site_addresses):
    """Otherwise a crashed Patroni leaves its server taking writes while the lock it no
    longer renews expires and the replica is promoted: two primaries (split brain)."""
    primary = primary_of()
    replica = other_db_host(primary)
    wait_until(lambda: following(replica), 60, f"{replica} following {primary}")
    killed = patroni_pid(primary)

    podman("exec", primary, "kill", "-KILL", str(killed))
    started = wait_until(
        lambda: (pid := patroni_pid(primary)) not in (0, killed) and pid,
        30,
        f"systemd starting {primary}'s Patroni again",
    )
    # Logged once the new Patroni renewed the lock of the server it found running.
    wait_until(
        lambda: (
            "the leader with the lock"
            in podman("exec", primary, "journalctl", "-o", "cat", f"_PID={started}")
        ),
        60,
        f"{primary}'s new Patroni holding the primary's lock",
    )
    assert primary_of() == primary, "the primary role moved after Patroni's restart"
    assert writes(primary).returncode == 0, "the primary takes no writes after Patroni's restart"
    wait_until(lambda: following(replica), 60, f"{replica} still following {primary}")
