"""The host frozen by test_2_failover.py comes back and rejoins as a replica.

The operator's only step besides starting it: rerunning site.yml, which then
changes nothing, and a second run neither.
"""

import os
from pathlib import Path

from conftest import REDIS_HOSTS, SENTINEL_HOSTS, address, master_of, role_of
from playbook import recap, run_playbook
from testhost import podman
from waiting import wait_until

# The scenario's own inventory (host_vars with redis_shard), as converge used it.
INVENTORY = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "inventory")


def rerun_site(tmp_path: Path, run: str) -> dict[str, int]:
    """site.yml once more, which must succeed; the changed count of each host."""
    (tmp_path / run).mkdir()
    result, seconds = run_playbook(INVENTORY, tmp_path / run)
    print(f"{run} rerun of site.yml after the failover: {seconds:.0f}s")
    assert result.returncode == 0, result.stdout[-6000:]
    return {host: recap(result.stdout, host)["changed"] for host in SENTINEL_HOSTS}


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

    print(f"changed by the first rerun: {rerun_site(tmp_path, 'first')}")
    changed = rerun_site(tmp_path, "second")
    assert set(changed.values()) == {0}, f"a rerun fights the failover: {changed}"
    assert master_of(app_password) == master, "a rerun of site.yml moved the master"
    role = wait_until(
        lambda: (lines := role_of(old_master, replication_password))[0] == "slave" and lines,
        60,
        "the returning host replicating the new master",
    )
    assert role[1:3] == [address(master), "6379"], f"it replicates something else: {role}"
