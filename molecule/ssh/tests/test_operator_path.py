"""The operator's path: a server with sshd on its own port, reached over SSH as
an unprivileged sudo user. No run may lock out the operator or a colleague."""

import json
import subprocess

import pytest
from conftest import CONTAINER
from playbook import recap, run_playbook
from waiting import wait_until

ACCOUNTS = ("admin", "colleague", "deployer")


@pytest.fixture
def site_yml(inventory, tmp_path):
    """site_yml(name, *args): site.yml over SSH with the converge's inventory.

    Returns the process, its output said as one line, and the recap's counters.
    """

    def run(name: str, *args: str):
        run_dir = tmp_path / name
        run_dir.mkdir()
        result, seconds = run_playbook(inventory, run_dir, *args)
        print(f"site.yml {name}: rc={result.returncode} in {seconds:.0f}s")
        return result, " ".join(result.stdout.split()), recap(result.stdout, CONTAINER)

    return run


def test_a_new_connection_gets_in_after_the_run(login):
    """Otherwise the operator is locked out of the server: only the provider's console helps."""
    result = login("admin", "sudo -n true && echo $SSH_CONNECTION")
    assert result.returncode == 0, result.stderr
    # Through the port forward (ansible_port 22213) to the port sshd listens on.
    assert result.stdout.split()[3] == "2222"


def test_every_account_with_a_key_still_gets_in(login):
    """A colleague's or the deploy account's key must keep working after someone else's run."""
    for account in ACCOUNTS:
        result = login(account, "id -un")
        assert result.returncode == 0, f"{account}: {result.stderr}"
        assert result.stdout.strip() == account


def test_the_lockdown_allows_the_key_holders_and_keys_only(console):
    effective = console.check_output("sshd -T")
    assert "passwordauthentication no" in effective
    assert "permitrootlogin no" in effective
    allowed = sorted(
        line.split()[1] for line in effective.splitlines() if line.startswith("allowusers ")
    )
    assert allowed == sorted(ACCOUNTS)


def test_the_firewall_admits_the_port_sshd_listens_on(console):
    """Found from sshd and the connection, not from the inventory's port (22213) or a default 22."""
    rules = console.check_output("nft list table inet chatstack")
    assert "tcp dport { 80, 443, 2222 } accept" in rules, rules


def test_ssh_ports_without_this_runs_port_are_refused(site_yml, login):
    """An operator listing SSH ports must not be able to write rules that drop the next login."""
    result, said, counters = site_yml(
        "refused-ports", "-e", json.dumps({"firewall_ssh_ports": [22]})
    )
    assert result.returncode != 0
    assert "Firewall refused, nothing was changed: this run reaches sshd on port 2222" in said, (
        said[-3000:]
    )
    assert counters["changed"] == 0
    assert login("admin").returncode == 0


def test_an_allow_list_dropping_a_key_holder_is_refused(site_yml):
    """Listing only some users must not silently lock out a colleague whose key works today."""
    allowed = json.dumps({"baseline_ssh_allowed_users": ["admin", "deployer"]})
    result, said, counters = site_yml("refused-users", "-e", allowed)
    assert result.returncode != 0
    assert "colleague can log in with a key today but would be locked out" in said, said[-3000:]
    assert counters["changed"] == 0


def test_a_colleague_with_a_sudo_password_reruns_without_changes(site_yml, ephemeral, login):
    """A second operator, whose sudo asks for a password, converges the same server:
    nothing changes, and nobody is locked out."""
    result, said, counters = site_yml(
        "deployer",
        "-e", "ansible_user=deployer",
        "-e", f"ansible_ssh_private_key_file={ephemeral / 'ssh/deployer'}",
        "-e", f"@{ephemeral / 'ssh/deployer-become.yml'}",
    )  # fmt: skip
    assert result.returncode == 0, said[-3000:]
    assert counters["changed"] == 0, said[-3000:]
    for account in ACCOUNTS:
        assert login(account).returncode == 0, account


def test_after_the_host_is_killed_it_is_reached_and_rerun_changes_nothing(site_yml, login):
    """A reboot loads the saved firewall and sshd config: the operator gets in and converges."""
    subprocess.run(["podman", "kill", CONTAINER], check=True, capture_output=True)
    subprocess.run(["podman", "start", CONTAINER], check=True, capture_output=True)
    wait_until(lambda: login("admin").returncode == 0, timeout=120, what="SSH after the restart")
    result, said, counters = site_yml("after-restart")
    assert result.returncode == 0, said[-3000:]
    assert counters["changed"] == 0, said[-3000:]
