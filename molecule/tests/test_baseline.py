"""The host baseline: security updates, SSH lock-down, fail2ban, time, journal, swap."""

import json
import subprocess

from playbook import recap, run_playbook
from testhost import LOGIN_FLOOD, container_address, sshd_port


def test_unattended_upgrades_take_security_updates_only(host):
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    # What unattended-upgrade itself will use, after all apt.conf.d files.
    dry_run = host.run("unattended-upgrade --dry-run --debug")
    assert dry_run.rc == 0, dry_run.stderr
    allowed = next(
        line
        for line in (dry_run.stdout + dry_run.stderr).splitlines()
        if "Allowed origins are" in line
    )
    print(allowed)
    codename = host.system_info.codename
    origins = allowed.split("Allowed origins are:", 1)[1].strip().split(", ")
    assert origins == [f"origin=Debian,codename={codename}-security,label=Debian-Security"]
    reboot = host.check_output("apt-config dump Unattended-Upgrade::Automatic-Reboot")
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in reboot
    for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"]:
        assert host.service(timer).is_enabled


def test_fail2ban_watches_sshd_in_the_journal_and_nginx(host):
    assert host.service("fail2ban").is_running
    status = host.check_output("fail2ban-client status")
    assert "sshd" in status and "nginx-limit-req" in status
    # Debian 12's sshd logs only to the journal: the jail must read it there.
    assert "_COMM=sshd" in host.check_output("fail2ban-client get sshd journalmatch")
    assert "/var/log/nginx/error.log" in host.check_output(
        "fail2ban-client get nginx-limit-req logpath"
    )
    # Password guessers only: a deploy makes a whole office reconnect at once,
    # which fills the WebSocket zone, and must not get its address banned.
    failregex = host.check_output("fail2ban-client get nginx-limit-req failregex")
    assert 'zone "(?:chatstack_login)"' in failregex, failregex


def test_fail2ban_filter_matches_nginx_rate_limit_rejections(host):
    # From 127.0.0.1, which fail2ban never bans: Nginx logs the rejections all the same.
    statuses = host.check_output(f"python3 -c '{LOGIN_FLOOD}'").split()
    assert "429" in statuses
    report = host.check_output("fail2ban-regex /var/log/nginx/error.log nginx-limit-req")
    matched = int(report.split("Lines:", 1)[1].split("matched")[0].rsplit(",", 1)[1].split()[0])
    print(f"fail2ban-regex nginx-limit-req: {matched} matched lines")
    assert matched > 0


def test_fail2ban_bans_into_nftables(host):
    address = "192.0.2.77"
    try:
        host.check_output(f"fail2ban-client set nginx-limit-req banip {address}")
        assert address in host.check_output("nft list table inet f2b-table")
    finally:
        host.run(f"fail2ban-client set nginx-limit-req unbanip {address}")
    assert address not in host.check_output("nft list table inet f2b-table")


def test_timesyncd_enabled_and_configured(host):
    # In a container it does not run (ConditionVirtualization=!container); on a server it does.
    assert host.service("systemd-timesyncd").is_enabled
    assert "/etc/systemd/timesyncd.conf.d/chatstack.conf" in host.check_output(
        "systemd-analyze cat-config systemd/timesyncd.conf"
    )


def test_journal_kept_on_disk_within_limits(host):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config
    assert "SystemMaxUse=1G" in config
    assert host.file("/var/log/journal").is_directory
    assert "/var/log/journal" in host.check_output(
        "journalctl --header --no-pager | grep -m1 'File path'"
    )


def test_no_swap_file_by_default(host):
    assert not host.file("/swapfile").exists
    assert "/swapfile" not in host.file("/etc/fstab").content_string


def ssh_to(address: str, port: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-p", port,
         *options, f"root@{address}", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_ssh_lockdown_refuses_then_applies_with_a_key(host, container, tmp_path):
    """Podman logs in as root without a key: the lock-down refuses, and applies with a key.

    Through podman exec whatever the scenario's connection: the subject is a login
    without a key (the ssh scenario proves the operator's path)."""
    # On both releases: Debian 13's OpenSSH is a major version newer.
    lockdown = json.dumps({"baseline_ssh_lockdown": True})
    keys = "/root/.ssh/authorized_keys"
    assert not host.file(keys).exists, "the test needs a host where root has no key yet"

    (tmp_path / "refused").mkdir()
    result, seconds = run_playbook(
        container, tmp_path / "refused", "-e", lockdown, over_podman=True
    )
    print(f"lock-down without a key: refused after {seconds:.1f}s")
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert "SSH lock-down refused, nothing was changed" in said
    assert "root, the user this run logs in as, has no key in /root/.ssh/authorized_keys" in said
    counters = recap(result.stdout, container)
    assert counters["changed"] == 0
    assert not host.file("/etc/ssh/sshd_config.d/00-chatstack.conf").exists

    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "molecule",
            "-f",
            str(tmp_path / "key"),
        ],
        check=True,
    )
    public_key = (tmp_path / "key.pub").read_text()
    address = container_address(container)
    try:
        host.check_output(f"install -d -m 0700 /root/.ssh && echo '{public_key.strip()}' > {keys}")

        # A key, but root is not on the allow-list: still refused.
        (tmp_path / "not-listed").mkdir()
        not_listed = json.dumps(
            {"baseline_ssh_lockdown": True, "baseline_ssh_allowed_users": ["admin"]}
        )
        result, _ = run_playbook(
            container, tmp_path / "not-listed", "-e", not_listed, over_podman=True
        )
        assert result.returncode != 0
        assert (
            "root, the user this run logs in as, is not in baseline_ssh_allowed_users"
            in " ".join(result.stdout.split())
        )

        (tmp_path / "applied").mkdir()
        result, seconds = run_playbook(
            container, tmp_path / "applied", "--tags", "baseline", "-e", lockdown, over_podman=True
        )
        print(f"lock-down with a key: applied in {seconds:.1f}s")
        assert result.returncode == 0, result.stdout
        effective = host.check_output("sshd -T")
        assert "passwordauthentication no" in effective
        assert "kbdinteractiveauthentication no" in effective
        assert "permitrootlogin without-password" in effective
        assert "allowusers root" in effective
        port = str(sshd_port(host))
        # Over the network, from the controller: the key gets in, nothing else is offered.
        assert (
            ssh_to(
                address, port, "-i", str(tmp_path / "key"), "-o", "IdentitiesOnly=yes"
            ).returncode
            == 0
        )
        password = ssh_to(address, port, "-o", "PubkeyAuthentication=no")
        assert password.returncode == 255
        assert "Permission denied (publickey)" in password.stderr
    finally:
        (tmp_path / "restored").mkdir()
        result, _ = run_playbook(
            container, tmp_path / "restored", "--tags", "baseline", over_podman=True
        )
        host.run(f"rm -f {keys}")
    # Switched off again, sshd is back to Debian's settings.
    assert result.returncode == 0, result.stdout
    assert not host.file("/etc/ssh/sshd_config.d/00-chatstack.conf").exists
