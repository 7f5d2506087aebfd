"""One Redis shard, a master and a replica, watched by three sentinels."""

from conftest import REDIS_HOSTS, REPLICATION_USER, SENTINEL_HOSTS, SHARD, address, redis_cli
from waiting import wait_until


def ask(sentinel: str, app_password: str) -> list[str]:
    return redis_cli(sentinel, app_password, 26379, "SENTINEL", "get-master-addr-by-name", SHARD)


def masters(app_password: str) -> dict[str, str]:
    """Each sentinel's answer: the shard's master as host:port."""
    return {host: ":".join(ask(host, app_password)) for host in SENTINEL_HOSTS}


def replication(host: str, password: str) -> dict[str, str]:
    lines = redis_cli(host, password, 6379, "INFO", "replication", user=REPLICATION_USER)
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def test_sentinels_agree_and_the_replica_is_in_sync(app_password, replication_password):
    """Otherwise app hosts would follow different masters, or a failover would lose recent state."""
    answers = masters(app_password)
    assert len(set(answers.values())) == 1, f"the sentinels disagree on the master: {answers}"
    master_address = next(iter(answers.values())).rsplit(":", 1)[0]
    by_address = {address(host): host for host in REDIS_HOSTS}
    assert master_address in by_address, f"the sentinels name no Redis host of the shard: {answers}"
    master = by_address[master_address]
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
