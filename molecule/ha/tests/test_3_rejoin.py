"""The host frozen by test_2_failover.py comes back and rejoins as a replica.

The operator's only step besides starting it: rerunning site.yml, which then
changes nothing, and a second run neither.
"""

from conftest import (
    REDIS_HOSTS,
    REPLICATION_USER,
    SENTINEL_HOSTS,
    address,
    master_of,
    redis_cli,
    rerun_site,
)
from testhost import podman
from waiting import wait_until


def role_of(host: str, replication_password: str) -> list[str]:
    """ROLE's first lines: ["slave", master address, port, ...] or ["master", ...]."""
    return redis_cli(host, replication_password, 6379, "ROLE", user=REPLICATION_USER)


def test_the_old_master_rejoins_as_replica_and_reruns_change_nothing(
    app_password, replication_password, tmp_path
):
    """Otherwise a host back from a failure splits the shard, or every rerun fights Sentinel."""
    states = {
        host: podman("inspect", "--format", "{{.State.Status}}", host) for host in REDIS_HOSTS
    }
    frozen = [host for host, state in states.items() if state == "paused"]
    assert len(frozen) == 1, f"test_2_failover.py left no Redis host frozen: {states}"
    old_master = frozen[0]
    podman("unpause", old_master)
    master = master_of(app_password)
    assert master != old_master, "the returning host took the master role back"

    print(f"changed by the first rerun: {rerun_site(tmp_path, 'first', SENTINEL_HOSTS)}")
    changed = rerun_site(tmp_path, "second", SENTINEL_HOSTS)
    assert set(changed.values()) == {0}, f"a rerun fights the failover: {changed}"
    assert master_of(app_password) == master, "a rerun of site.yml moved the master"
    role = wait_until(
        lambda: (lines := role_of(old_master, replication_password))[0] == "slave" and lines,
        60,
        "the returning host replicating the new master",
    )
    assert role[1:3] == [address(master), "6379"], f"it replicates something else: {role}"
