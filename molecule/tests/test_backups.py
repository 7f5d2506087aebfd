"""Scheduled backups (roles/backup): what the timer's service leaves on the host, and a
restore from it after the data is gone."""

import datetime
import json
import re
from pathlib import Path

import pytest
from chatclient import assert_chat_is_back, chatted_before_the_drill, stored_messages
from playbook import restore_newest, run_playbook_ok
from testhost import sshd_port

BACKUPS = "/var/backups/chatstack"
METRIC = "/var/lib/prometheus/node-exporter/chatstack_backup.prom"
STAMP = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def needs_backups(host) -> None:
    if not host.file("/etc/systemd/system/chatstack-backup.timer").exists:
        pytest.skip("this host does not hold the site's data")


def backups(host) -> list[str]:
    """The backups on the host, oldest first."""
    names = host.check_output(f"ls -1 {BACKUPS}").split()
    return sorted(name for name in names if STAMP.match(name))


def run_backup(host) -> str:
    """Starts the service as its timer does; the name of the backup it made."""
    before = backups(host)
    started = host.run("systemctl start chatstack-backup.service")
    journal = host.run("journalctl -u chatstack-backup --no-pager -n 30").stdout
    assert started.rc == 0, f"the scheduled backup fails, so none is made:\n{journal}"
    made = sorted(set(backups(host)) - set(before))
    assert len(made) == 1, f"one run made {made}"
    return made[0]


def sha1(host, path: str) -> str:
    return host.check_output(f"sha1sum {path}").split()[0]


def metric(host, name: str) -> float:
    text = host.file(METRIC).content_string
    return float(re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M).group(1))


def test_the_timer_runs_daily_and_catches_up(host):
    """Without it backups happen only when someone remembers; without Persistent a host
    that was off at night skips its backup."""
    needs_backups(host)
    timer = host.service("chatstack-backup.timer")
    assert timer.is_enabled and timer.is_running
    shown = host.check_output(
        "systemctl show chatstack-backup.timer -p TimersCalendar -p Persistent"
        " -p RandomizedDelayUSec"
    )
    assert "OnCalendar=*-*-* 00:00:00" in shown, shown
    assert "Persistent=yes" in shown, shown
    assert "RandomizedDelayUSec=1h" in shown, shown


def test_a_backup_is_private_intact_and_measured(host):
    """A backup others can read leaks every account; a damaged one is found only on the
    day it is needed; without the metric nobody notices backups have stopped."""
    needs_backups(host)
    name = run_backup(host)
    path = f"{BACKUPS}/{name}"
    directory = host.file(path)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o700)
    files = host.check_output(f"find {path} -type f -printf '%u:%g %m %P\\n'").splitlines()
    assert files and all(line.startswith("root:root 600 ") for line in files), files
    manifest = json.loads(host.file(f"{path}/manifest.json").content_string)
    assert manifest["engine"] == "sqlite"
    # Checked again here, read-only, the way restore.yml checks it before use.
    integrity = host.check_output(
        "python3 -c 'import sqlite3, sys;"
        ' print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)'
        '.execute("PRAGMA integrity_check").fetchone()[0])\''
        f" {path}/db.sqlite3"
    )
    assert integrity == "ok"
    assert sha1(host, f"{path}/db.sqlite3") == manifest["database"]["checksum"]
    kept = sha1(host, f"{path}/files/etc/chatstack/secret_key")
    assert kept == sha1(host, "/etc/chatstack/secret_key"), "the backup lacks the SECRET_KEY"
    assert {entry["path"] for entry in manifest["files"]} >= {"/etc/chatstack/secret_key"}

    made = datetime.datetime.strptime(name, STAMP_FORMAT).replace(tzinfo=datetime.UTC)
    assert (
        abs(metric(host, "chatstack_backup_last_success_timestamp_seconds") - made.timestamp()) < 60
    )
    size = sum(map(int, host.check_output(f"find {path} -type f -printf '%s\\n'").split()))
    assert metric(host, "chatstack_backup_last_size_bytes") == size
    assert metric(host, "chatstack_backup_max_age_seconds") == 26 * 3600


def test_retention_keeps_the_newest_and_the_young(host):
    """Kept forever, backups fill the disk; pruned by count alone, a burst of runs would
    throw away every backup older than today."""
    needs_backups(host)
    now = datetime.datetime.now(datetime.UTC)
    # More young ones than backup_keep_count (7): the oldest of them stays by age alone.
    young = [(now - datetime.timedelta(days=d)).strftime(STAMP_FORMAT) for d in range(1, 9)]
    old = [f"202001{day:02d}T000000Z" for day in range(1, 6)]
    try:
        for name in young + old:
            host.check_output(f"mkdir -m 0700 {BACKUPS}/{name}")
        host.check_output(f"touch {BACKUPS}/{old[0]}.tar.age")
        real = [name for name in backups(host) if name not in young + old]
        new = run_backup(host)
        assert backups(host) == sorted([*real, new, *young])
        assert not host.file(f"{BACKUPS}/{old[0]}.tar.age").exists
    finally:
        host.run(f"cd {BACKUPS} && rm -rf {' '.join(young + old)} {old[0]}.tar.age")


@pytest.mark.destructive
def test_a_restore_from_the_scheduled_backup_brings_deleted_data_back(
    host, container, site, tmp_path: Path
):
    """The night the data is lost: accounts, sessions and history come back from the
    backup the timer made, or users lose everything."""
    needs_backups(host)
    drill = chatted_before_the_drill(site, host)
    run_backup(host)

    host.check_output("chatstack-manage flush --noinput")
    assert stored_messages(host, drill.room) == []

    restore_newest(container, tmp_path, container)

    assert stored_messages(host, drill.room) == drill.stored
    assert_chat_is_back(site, drill)


@pytest.mark.destructive
def test_the_off_host_copy_arrives_encrypted_and_decrypts(host, container, tmp_path: Path):
    """Backups kept only beside the data die with the host; copied in plaintext, whoever
    reads the backup host reads every account."""
    needs_backups(host)
    # The host is its own backup host here: sshd on loopback, the role's account.
    host.check_output("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server age")
    host.check_output("systemctl start ssh")
    key = "/root/backup-test-age.key"
    host.check_output(f"rm -f {key} && age-keygen -o {key}")
    recipient = re.search(r"public key: (age1\w+)", host.file(key).content_string).group(1)
    groups = {group: [container] for group in ("standalone", "lb", "app", "redis", "backup")}
    settings = {
        "backup_age_recipients": [recipient],
        "backup_remote_address": "127.0.0.1",
        "backup_remote_port": sshd_port(host),
    }
    run_playbook_ok(
        groups, tmp_path, "--tags", "backup", "-e", json.dumps(settings), playbook="site.yml"
    )

    name = run_backup(host)
    remote = f"/var/backups/chatstack-remote/{container}"
    arrived = host.check_output(f"ls -1 {remote}").split()
    assert f"{name}.tar.age" in arrived
    assert all(entry.endswith(".tar.age") for entry in arrived), arrived
    copy = host.file(f"{remote}/{name}.tar.age")
    assert (copy.user, copy.mode) == ("chatstack-backup", 0o600)
    assert b"SQLite format 3" not in copy.content, "the off-host copy is not encrypted"
    listed = host.check_output(f"age -d -i {key} {remote}/{name}.tar.age | tar -t").split()
    assert {f"{name}/manifest.json", f"{name}/db.sqlite3"} <= set(listed), listed
    offsite = host.file(METRIC.replace("chatstack_backup", "chatstack_backup_offsite"))
    assert "chatstack_backup_offsite_last_success_timestamp_seconds" in offsite.content_string
