"""The cluster's data is in PostgreSQL on the db host: its backup timer dumps it,
backup.yml fetches the newest dump, and restore.yml brings deleted data back from it.

Deletes every account and message of the site (and restores them): run it only
against the scenario's own hosts.
"""

import json

import testinfra
from chatclient import assert_chat_is_back, chatted_before_the_drill, stored_messages
from conftest import APP_HOSTS, DB, GROUPS
from playbook import restore_newest, run_playbook_ok


def test_the_db_hosts_dump_restores_deleted_accounts_and_history(site, tmp_path):
    """The night the database is lost: without a dump that restores, every account and
    every conversation of the site is gone."""
    app = testinfra.get_host(f"podman://{APP_HOSTS[0]}")
    db = testinfra.get_host(f"podman://{DB}")
    drill = chatted_before_the_drill(site, app)

    started = db.run("systemctl start chatstack-backup.service")
    journal = db.run("journalctl -u chatstack-backup --no-pager -n 30").stdout
    assert started.rc == 0, f"the db host's scheduled backup fails:\n{journal}"

    fetched = tmp_path / "fetched"
    run_playbook_ok(GROUPS, tmp_path, "-e", f"backup_dir={fetched}", playbook="backup.yml")
    manifest = json.loads((fetched / "manifest.json").read_text())
    assert manifest["engine"] == "postgresql"
    assert manifest["host"] == DB
    assert (fetched / "db.dump").stat().st_size > 0, "backup.yml fetched an empty dump"

    app.check_output("chatstack-manage flush --noinput")
    assert stored_messages(app, drill.room) == []

    restore_newest(GROUPS, tmp_path, DB)
    for name in APP_HOSTS:
        units = testinfra.get_host(f"podman://{name}")
        assert units.service("chatstack-uwsgi").is_running, f"{name} serves no pages"
    assert stored_messages(app, drill.room) == drill.stored
    assert_chat_is_back(site, drill)
