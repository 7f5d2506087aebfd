"""After every fault of the tests before, each failed host back: rerunning
site.yml, the operator's only step, changes nothing, either time, and
neither run moves the Redis master, the PostgreSQL primary or the shared
address back.
"""

from conftest import (
    DB_HOSTS,
    REDIS_HOSTS,
    SITE_HOSTS,
    following,
    holder,
    master_of,
    primary_of,
    rerun_site,
    wait_replicating,
)
from waiting import wait_until


def test_reruns_after_the_failovers_change_nothing(app_password, replication_password, tmp_path):
    """Otherwise every rerun after a failover fights Sentinel, Patroni or keepalived, or
    undoes the failover and cuts everyone off again."""
    master, primary, held = master_of(app_password), primary_of(), holder()

    for run in ("first", "second"):
        counts, tasks = rerun_site(tmp_path, run, SITE_HOSTS)
        assert set(counts.values()) == {0}, f"the {run} rerun fights the failovers: {tasks}"

    assert master_of(app_password) == master, "a rerun of site.yml moved the Redis master"
    assert primary_of() == primary, "a rerun of site.yml moved the PostgreSQL primary"
    assert holder() == held, "a rerun of site.yml moved the shared address"
    redis_replica = next(host for host in REDIS_HOSTS if host != master)
    wait_replicating(redis_replica, master, replication_password)
    db_replica = next(host for host in DB_HOSTS if host != primary)
    wait_until(lambda: following(db_replica), 60, f"{db_replica} following {primary}")
