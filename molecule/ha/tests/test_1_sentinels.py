"""One Redis shard, a master and a replica, watched by three sentinels."""

from conftest import REDIS_HOSTS, REPLICATION_USER, master_of, redis_cli
from waiting import wait_until


def replication(host: str, password: str) -> dict[str, str]:
    lines = redis_cli(host, password, 6379, "INFO", "replication", user=REPLICATION_USER)
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def test_sentinels_agree_and_the_replica_is_in_sync(app_password, replication_password):
    """Otherwise app hosts would follow different masters, or a failover would lose recent state."""
    master = master_of(app_password)
    replica = next(host for host in REDIS_HOSTS if host != master)
    role = replication(replica, replication_password)["role"]
    assert role == "slave", "the replica is a master of its own: a failover would find no data"

    def in_sync():
        master_info = replication(master, replication_password)
        replica_info = replication(replica, replication_password)
        return (
            replica_info.get("master_link_status") == "up"
            and master_info["master_repl_offset"] == replica_info["slave_repl_offset"]
        ) or None

    wait_until(in_sync, 30, "the replica catching up with the master")
