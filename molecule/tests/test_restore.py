"""Back up, destroy the host, restore onto a new one: history, accounts and sessions survive.

Destroys the host under test, so it runs last (marker destroys_host). The new
host is <container>-restored; Molecule's destroy step of the resilience
scenario removes it.
"""

import asyncio
import ssl
import stat
import uuid
from pathlib import Path

import pytest
import testinfra
from chatclient import ChatSite, chat, history, stored_messages
from playbook import run_playbook_ok
from testhost import UNITS, podman, published_https_url, systemd_state

pytestmark = [pytest.mark.destructive, pytest.mark.destroys_host]


def playbook(name: str, container: str, tmp_path: Path, *args: str) -> None:
    run_playbook_ok(container, tmp_path, *args, playbook=name)


def site_of(host, container: str) -> ChatSite:
    pem = host.file("/etc/ssl/certs/chatstack.crt").content_string
    return ChatSite(published_https_url(container), ssl.create_default_context(cadata=pem))


def test_backup_destroy_restore(host, container, site, tmp_path):
    old = container
    new = f"{old}-restored"
    room = f"restore-{uuid.uuid4().hex[:8]}"
    alice, bob = site.session(), site.session()
    alice.signup(f"alice{uuid.uuid4().hex[:8]}")
    bob.signup(f"bob{uuid.uuid4().hex[:8]}")
    asyncio.run(chat(alice, bob, room, ["kept?", "kept.", "ünïcödé ✓", "<b>still text</b>"]))
    messages = stored_messages(host, room)
    secret_key = host.file("/etc/chatstack/secret_key").content_string
    image = podman("container", "inspect", "--format", "{{.ImageName}}", old)

    backup = tmp_path / "backup"
    playbook("backup.yml", old, tmp_path, "-e", f"backup_dir={backup}")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    for path in (backup / "db.sqlite3", backup / "files/etc/chatstack/secret_key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (backup / "files/etc/chatstack/secret_key").read_text() == secret_key

    podman("rm", "--force", old)
    podman("rm", "--force", "--ignore", new)
    podman(
        "run", "--detach", "--name", new, "--hostname", new, "--systemd=always",
        "--cap-add", "NET_ADMIN", "--publish", "127.0.0.1::443", image, "/sbin/init",
    )  # fmt: skip
    assert systemd_state(new, timeout=60) == "running"
    playbook("site.yml", new, tmp_path)
    # A rebuilt server with another name: the backup's host must be named, and the
    # target confirmed.
    playbook(
        "restore.yml", new, tmp_path, "-l", new, "-e", f"restore_from={backup}",
        "-e", f"restore_from_host={old}", "-e", f"restore_confirm={new}",
    )  # fmt: skip

    restored = testinfra.get_host(f"podman://{new}")
    # The database the restore replaced is kept, private to the database's owner.
    kept = restored.run("ls /var/lib/chatstack/db.sqlite3.before-restore-*").stdout.split()
    assert len(kept) == 1, "restore.yml kept no copy of the database it replaced"
    snapshot = restored.file(kept[0])
    assert (snapshot.user, snapshot.mode) == ("chatstack", 0o600)
    for unit in UNITS:
        assert restored.service(unit).is_running, unit
    assert restored.file("/etc/chatstack/secret_key").content_string == secret_key
    assert stored_messages(restored, room) == messages

    new_site = site_of(restored, new)
    # Sessions are signed with SECRET_KEY and stored in the database: both came back.
    carried_over = new_site.session()
    for cookie in alice.cookies:
        carried_over.cookies.set_cookie(cookie)
    status, _, _ = carried_over.request("/chat/")
    assert status == 200, "the session from before the backup is not valid any more"

    relogged = new_site.session()
    relogged.login(bob.username)
    shown = asyncio.run(history(relogged, room))
    assert [(m["id"], m["user"], m["message"]) for m in shown] == [
        (m["id"], m["author__username"], m["text"]) for m in messages
    ]
