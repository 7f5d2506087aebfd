"""Load balancers sharing a virtual address, wired from the inventory alone.

Fake inventories, never contacted: tests/wiring/render.yml writes the files
site.yml would (firewall, Nginx, keepalived) on the controller. One load
balancer, with or without an address, must come out as it always did; two
with an address must hear each other's VRRP, and only each other's, and serve
one certificate.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The playbook runner of the Molecule tests.
sys.path.insert(0, str(ROOT / "molecule/tests"))

from playbook import render_wiring  # noqa: E402

ADDRESSES = {"lb1": "10.0.0.2", "lb2": "10.0.0.3", "app1": "10.0.0.11", "app2": "10.0.0.12",
             "redis1": "10.0.0.21", "db1": "10.0.0.31"}  # fmt: skip
VIRTUAL = "10.0.0.100"
SITE = {"nginx_server_name": "chat.example.org"}


def render(directory: Path, lbs: list[str], site_vars: dict, keeps: dict | None = None) -> Path:
    """render.yml over a site with load balancers `lbs`, two app hosts, a redis and a db host;
    `keeps` is {host: [secrets it keeps]}. Returns the directory of each host's files."""
    groups = {"lb": lbs, "app": ["app1", "app2"], "redis": ["redis1"], "db": ["db1"]}
    return render_wiring(directory, groups, ADDRESSES, site_vars, keeps)


def wiring(out: Path, host: str) -> dict:
    """The load balancers' part of the wiring's choices for `host`."""
    choices = json.loads((out / host / "wiring.json").read_text())
    return {
        key: choices[key]
        for key in ("lb_ha", "vrrp_keeper", "nginx_tls_host", "nginx_acme_address")
    }


@pytest.fixture(scope="module")
def one_lb(tmp_path_factory) -> dict[str, Path]:
    """One load balancer, without and with a virtual address."""
    return {
        name: render(tmp_path_factory.mktemp(name), ["lb1"], site_vars)
        for name, site_vars in {
            "plain": SITE,
            "with_address": {**SITE, "chatstack_lb_virtual_address": VIRTUAL},
        }.items()
    }


@pytest.fixture(scope="module")
def two_lbs(tmp_path_factory) -> Path:
    return render(
        tmp_path_factory.mktemp("two"), ["lb1", "lb2"],
        {**SITE, "chatstack_lb_virtual_address": VIRTUAL},
    )  # fmt: skip


def test_one_load_balancer_ignores_a_virtual_address(one_lb):
    """A single load balancer's site must not change (or break) because an address is set."""
    plain, with_address = one_lb["plain"], one_lb["with_address"]
    for host in ADDRESSES.keys() - {"lb2"}:
        for name in ("nftables.conf", "nginx.conf"):
            if (plain / host / name).exists():
                assert (plain / host / name).read_text() == (
                    with_address / host / name
                ).read_text(), f"{host}'s {name} changed"
    assert not (with_address / "lb1/keepalived.conf").exists()
    assert wiring(with_address, "lb1") == {
        "lb_ha": False, "vrrp_keeper": "lb1", "nginx_tls_host": "lb1",
        "nginx_acme_address": "",
    }  # fmt: skip


def test_one_load_balancer_admits_no_vrrp(one_lb):
    """A lone load balancer has no peer to hear: no host's firewall admits VRRP."""
    for host in ADDRESSES.keys() - {"lb2"}:
        assert "l4proto 112" not in (one_lb["with_address"] / host / "nftables.conf").read_text()


def test_nginx_answers_on_every_address(two_lbs):
    """Nginx bound to the host's own address would refuse users on the virtual one."""
    conf = (two_lbs / "lb1/nginx.conf").read_text()
    assert "listen 80 default_server;" in conf
    assert "listen 443 ssl http2 default_server;" in conf


@pytest.mark.parametrize(
    ("host", "peer", "priority"), [("lb1", "10.0.0.3", 200), ("lb2", "10.0.0.2", 190)]
)
def test_each_load_balancer_announces_to_the_other(two_lbs, host, peer, priority):
    """Without the other as a unicast peer neither would hear of a failure: both would hold the
    address, or none take it over."""
    conf = (two_lbs / host / "keepalived.conf").read_text()
    assert f"unicast_src_ip {ADDRESSES[host]}\n" in conf
    assert f"unicast_peer {{\n        {peer}\n    }}" in conf
    assert f"priority {priority}\n" in conf
    assert f"{VIRTUAL} dev eth0\n" in conf
    assert "interface eth0\n" in conf
    assert "nopreempt\n" in conf and "state BACKUP\n" in conf
    assert "track_script {\n        chatstack_check\n" in conf
    assert 'script "/usr/bin/systemctl is-active --quiet nginx.service"' in conf


@pytest.mark.parametrize(("host", "peer"), [("lb1", "10.0.0.3"), ("lb2", "10.0.0.2")])
def test_each_load_balancer_admits_vrrp_from_the_other_only(two_lbs, host, peer):
    """A firewall dropping the peer's VRRP makes both hold the address; admitting anyone lets a
    stranger take it."""
    rules = (two_lbs / host / "nftables.conf").read_text()
    assert f"ip saddr {{ {peer} }} meta l4proto 112 accept" in rules
    assert rules.count("l4proto 112") == 1


def test_no_other_host_admits_vrrp(two_lbs):
    for host in ("app1", "app2", "redis1", "db1"):
        assert "l4proto 112" not in (two_lbs / host / "nftables.conf").read_text(), host


def test_both_serve_the_certificate_of_the_first(two_lbs):
    """Two self-signed certificates would greet users who accepted one with a warning after a
    move of the address."""
    for host in ("lb1", "lb2"):
        assert wiring(two_lbs, host) == {
            "lb_ha": True, "vrrp_keeper": "lb1", "nginx_tls_host": "lb1",
            "nginx_acme_address": VIRTUAL,
        }  # fmt: skip


def test_the_recorded_keeper_stays_the_keeper(tmp_path):
    """A new first lb host must not generate a new password and certificate: that would cut
    VRRP between old and new hosts and change the certificate users accepted."""
    out = render(
        tmp_path, ["lb1", "lb2"], {**SITE, "chatstack_lb_virtual_address": VIRTUAL},
        keeps={"lb2": ["keepalived_password"]},
    )  # fmt: skip
    for host in ("lb1", "lb2"):
        assert wiring(out, host)["nginx_tls_host"] == "lb2", host
        assert wiring(out, host)["vrrp_keeper"] == "lb2", host


def test_acme_challenges_are_relayed_to_the_peer(tmp_path, two_lbs):
    """With ACME each load balancer renews its own certificate; the CA asks whichever holds the
    address, which must pass a token it lacks to the other, or renewals on the other fail."""
    site_vars = {**SITE, "chatstack_lb_virtual_address": VIRTUAL, "nginx_tls_mode": "acme",
                 "nginx_acme_email": "ops@example.org"}  # fmt: skip
    conf = (render(tmp_path, ["lb1", "lb2"], site_vars) / "lb1/nginx.conf").read_text()
    assert "upstream chatstack_acme_peers {\n        server 10.0.0.3:80;\n    }" in conf, conf
    assert "try_files $uri @chatstack_acme_peers;" in conf
    # A self-signed site asks no CA: nothing to relay.
    assert "chatstack_acme_peers" not in (two_lbs / "lb1/nginx.conf").read_text()
