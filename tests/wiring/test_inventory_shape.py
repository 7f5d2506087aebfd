"""A wrong inventory shape is refused in the first seconds, naming the group or hosts.

Fake inventories of hosts that are never contacted, with the site's wiring
(playbooks/group_vars/all) and site.yml's inventory checks. Without them, an
operator's mistake surfaces late, perhaps inside a no_log task with its
reason hidden.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The playbook runner of the Molecule tests.
sys.path.insert(0, str(ROOT / "molecule/tests"))

from playbook import fake_inventory, render_wiring, run_playbook  # noqa: E402


def check(
    tmp_path: Path,
    groups: dict[str, list[str]],
    addresses: dict[str, str],
    site_vars: dict | None = None,
):
    """check-inventory.yml over an inventory of `groups` (and the site's group_vars
    `site_vars`): its exit code and output as one line."""
    hosts = {name: {"chatstack_private_address": address} for name, address in addresses.items()}
    inventory = fake_inventory(tmp_path, groups, hosts, site_vars or {})
    result, _ = run_playbook(
        inventory,
        tmp_path,
        "-c",
        "local",
        playbook=str(Path(__file__).with_name("check-inventory.yml")),
    )
    return result.returncode, " ".join(result.stdout.split())


CLUSTER = {"lb": ["lb1"], "app": ["app1", "app2"], "redis": ["redis1"], "db": ["db1"]}
ADDRESSES = {"lb1": "10.0.0.2", "app1": "10.0.0.11", "app2": "10.0.0.12",
             "redis1": "10.0.0.21", "db1": "10.0.0.31"}  # fmt: skip


def test_one_server_in_every_group_passes(tmp_path):
    groups = {"lb": ["one"], "app": ["one"], "redis": ["one"]}
    rc, said = check(tmp_path, groups, {"one": "203.0.113.5"})
    assert rc == 0, said


def test_a_cluster_with_an_address_each_passes(tmp_path):
    rc, said = check(tmp_path, CLUSTER, ADDRESSES)
    assert rc == 0, said


@pytest.mark.parametrize("group", ["lb", "app", "redis"])
def test_a_missing_group_is_named(tmp_path, group):
    groups = {name: members for name, members in CLUSTER.items() if name != group}
    rc, said = check(tmp_path, groups, ADDRESSES)
    assert rc != 0
    assert f"The inventory puts no host of this site in the group(s) {group}:" in said, said


def test_two_database_hosts_pass(tmp_path):
    groups = {**CLUSTER, "db": ["db1", "db2"]}
    rc, said = check(tmp_path, groups, {**ADDRESSES, "db2": "10.0.0.32"})
    assert rc == 0, said


def database_wiring(tmp_path: Path, db_hosts: list[str]) -> dict[str, dict]:
    """What the site wires for each db host of CLUSTER with `db_hosts`, and its pg_hba.conf."""
    out = render_wiring(
        tmp_path, {**CLUSTER, "db": db_hosts}, {**ADDRESSES, "db2": "10.0.0.32"}, {}
    )
    return {
        host: {
            **json.loads((out / host / "wiring.json").read_text()),
            "pg_hba": (out / host / "pg_hba.conf").read_text(),
        }
        for host in db_hosts
    }


def test_one_database_host_keeps_a_plain_server(tmp_path):
    """Otherwise a site with one db host would wait for an etcd that no host runs."""
    wiring = database_wiring(tmp_path, ["db1"])["db1"]
    assert not wiring["patroni"] and wiring["etcd_hosts"] == []
    assert wiring["app_database_host"] == "10.0.0.31" and wiring["target_session_attrs"] == ""
    assert "replication" not in wiring["pg_hba"], wiring["pg_hba"]
    assert [entry["port"] for entry in wiring["restricted_ports"]] == [5432]
    assert wiring["restricted_ports"][0]["sources"] == ["10.0.0.11", "10.0.0.12"]


def test_two_database_hosts_fail_over_through_three_etcd_members(tmp_path):
    """Otherwise the app would keep writing to one server, or the election would lack a vote."""
    wiring = database_wiring(tmp_path, ["db1", "db2"])
    assert all(host["patroni"] for host in wiring.values())
    assert wiring["db1"]["etcd_hosts"] == ["db1", "db2", "app1"]
    assert wiring["db1"]["app_database_host"] == "10.0.0.31,10.0.0.32"
    assert wiring["db1"]["target_session_attrs"] == "read-write"
    assert "hostssl replication  replicator  10.0.0.32/32" in wiring["db1"]["pg_hba"]
    ports = {entry["port"]: entry["sources"] for entry in wiring["db1"]["restricted_ports"]}
    assert ports[5432] == ["10.0.0.11", "10.0.0.12", "10.0.0.32"], "replicas must reach PostgreSQL"
    assert ports[8008] == ["10.0.0.32"], "only the other member may call Patroni's REST API"
    assert ports[2379] == ["10.0.0.11", "10.0.0.32"] and ports[2380] == ["10.0.0.11", "10.0.0.32"]


def test_hosts_sharing_an_address_are_named(tmp_path):
    rc, said = check(tmp_path, CLUSTER, {**ADDRESSES, "app2": ADDRESSES["app1"]})
    assert rc != 0
    assert "app1 and app2 share an address" in said, said


def test_a_loopback_address_in_a_cluster_is_named(tmp_path):
    rc, said = check(tmp_path, CLUSTER, {**ADDRESSES, "db1": "127.0.0.1"})
    assert rc != 0
    assert "db1 has a loopback address" in said, said


LB_PAIR = {**CLUSTER, "lb": ["lb1", "lb2"]}
LB_PAIR_ADDRESSES = {**ADDRESSES, "lb2": "10.0.0.3"}
SHARED = {"chatstack_lb_virtual_address": "10.0.0.100", "nginx_server_name": "chat.example.org"}


def test_load_balancers_sharing_an_address_pass(tmp_path):
    rc, said = check(tmp_path, LB_PAIR, LB_PAIR_ADDRESSES, SHARED)
    assert rc == 0, said


def test_load_balancers_sharing_an_address_without_one_name_are_refused(tmp_path):
    """Without one public name each would certify its own: users would be warned after a move."""
    site_vars = {"chatstack_lb_virtual_address": "10.0.0.100"}
    rc, said = check(tmp_path, LB_PAIR, LB_PAIR_ADDRESSES, site_vars)
    assert rc != 0
    assert 'nginx_server_name (group_vars; now {"lb1": "", "lb2": ""})' in said, said


def test_a_virtual_address_that_a_host_has_is_refused(tmp_path):
    """keepalived would add, and take away, an address that a host of the site lives on."""
    site_vars = {**SHARED, "chatstack_lb_virtual_address": ADDRESSES["app1"]}
    rc, said = check(tmp_path, LB_PAIR, LB_PAIR_ADDRESSES, site_vars)
    assert rc != 0
    assert "must be none of the hosts' chatstack_private_address" in said, said
