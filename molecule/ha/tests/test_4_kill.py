"""kill -9 of the Redis master's server under chat traffic, after test_3_rejoin.py
made the shard whole again: chat resumes, nothing is lost, the shard stays whole.

systemd starts a killed redis-server again at once, before the sentinels would
call it down: the server comes back empty (the site keeps no Redis data on disk)
and its replica copies that, as Redis' documentation warns for masters without
persistence. What chat keeps in Redis must survive that.
"""

import testinfra
from conftest import REDIS_HOSTS, master_of, wait_replicating
from hachat import USERS, chat_through, members_of_a_new_room, summary
from testhost import main_pid, podman


def test_killing_the_master_process_loses_no_message(
    site, new_users, person, app_password, replication_password
):
    """Otherwise a crashed Redis master stops chat, loses or doubles messages, or
    leaves the shard without a replica to fail over to."""
    master = master_of(app_password)
    server = testinfra.get_host(f"podman://{master}")
    killed = main_pid(server, "redis-server")
    members = members_of_a_new_room(new_users(USERS))

    resumed = chat_through(
        members,
        person,
        lambda: podman("exec", master, "systemctl", "kill", "--signal=KILL", "redis-server"),
    )
    print(f"Redis master {master} killed: chat resumed after {resumed:.1f}s ({summary(members)})")
    assert main_pid(server, "redis-server") not in (0, killed), "redis-server was not started again"

    master = master_of(app_password)
    replica = next(host for host in REDIS_HOSTS if host != master)
    wait_replicating(replica, master, replication_password)
