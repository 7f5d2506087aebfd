"""The host frozen by test_2_failover.py comes back and rejoins as a replica,
with no operator step (test_7_reruns.py reruns site.yml after every fault).
"""

from conftest import REDIS_HOSTS, host_left_down, master_of, wait_replicating
from testhost import podman


def test_the_old_master_rejoins_as_replica(app_password, replication_password):
    """Otherwise a host back from a failure splits the shard, or leaves it without a replica."""
    old_master = host_left_down(REDIS_HOSTS, ("paused",), "test_2_failover.py")
    podman("unpause", old_master)
    master = master_of(app_password)
    assert master != old_master, "the returning host took the master role back"
    wait_replicating(old_master, master, replication_password)
