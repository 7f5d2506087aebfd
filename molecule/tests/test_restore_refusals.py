"""restore.yml refuses, before any change and saying what to do, every restore it cannot trust.

Each case runs restore.yml against the converged host with a backup written
here (a small SQLite database and stand-in secrets, as backup.yml lays them
out), wrong in one way. The host's database is never touched: a refusal that
let the run go on would replace it, so the checks run on the Debian 12 host
only and every case asserts its own message, not just a failure.
"""

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from playbook import SINGLE_HOST_GROUPS, recap, run_playbook

DATABASE = "/var/lib/chatstack/db.sqlite3"
SECRET_FILES = ["/etc/chatstack/secret_key", "/etc/redis/chatstack.password"]


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()


def write_backup(directory: Path, host: str) -> dict:
    """A backup of `host` as backup.yml writes one; returns its manifest."""
    directory.mkdir()
    database = sqlite3.connect(directory / "db.sqlite3")
    database.execute("CREATE TABLE restored (line TEXT)")
    database.commit()
    database.close()
    files = []
    for path in SECRET_FILES:
        copy = directory / f"files{path}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text("not-the-real-secret")
        files.append(
            {"path": path, "checksum": sha1(copy), "owner": "root", "group": "root", "mode": "0600"}
        )
    manifest = {
        "host": host,
        "created": "20261130T000000Z",
        "database": {
            "path": DATABASE,
            "checksum": sha1(directory / "db.sqlite3"),
            "owner": "chatstack",
            "group": "chatstack",
            "mode": "0644",
            "integrity": "ok",
        },
        "files": files,
    }
    save(directory, manifest)
    return manifest


def save(directory: Path, manifest: dict) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest))


def other_host(backup: Path, manifest: dict) -> None:
    manifest["host"] = "chatstack-old-server"


def climbing_path(backup: Path, manifest: dict) -> None:
    manifest["files"][0]["path"] = "/etc/chatstack/../../root/.ssh/authorized_keys"


def unlisted_path(backup: Path, manifest: dict) -> None:
    manifest["files"][0]["path"] = "/etc/passwd"


def relative_path(backup: Path, manifest: dict) -> None:
    manifest["files"][0]["path"] = "etc/chatstack/secret_key"


def readable_secret(backup: Path, manifest: dict) -> None:
    manifest["files"][1]["mode"] = "0644"


def foreign_owner(backup: Path, manifest: dict) -> None:
    manifest["files"][0]["owner"] = "nobody"


def damaged_database(backup: Path, manifest: dict) -> None:
    with (backup / "db.sqlite3").open("ab") as database:
        database.write(b"changed")


def changed_secret(backup: Path, manifest: dict) -> None:
    (backup / "files/etc/redis/chatstack.password").write_text("someone else's")


def corrupt_copy(backup: Path, manifest: dict) -> None:
    manifest["database"]["integrity"] = "*** in database main ***\nPage 2 is never used"


def listed_twice(backup: Path, manifest: dict) -> None:
    manifest["files"].append(dict(manifest["files"][0], path="/etc/chatstack//secret_key"))


def as_is(backup: Path, manifest: dict) -> None:
    pass


@pytest.mark.parametrize(
    ("change", "extra", "expected"),
    [
        (as_is, {"restore_from": None}, "Set restore_from to a directory backup.yml wrote"),
        (other_host, {}, "add -e restore_from_host=chatstack-old-server"),
        (as_is, {"restore_from_host": "chatstack-old-server"},
         "is a backup of {host}, not of chatstack-old-server"),
        (as_is, {"restore_confirm": None}, "confirm with -e restore_confirm={host}"),
        (as_is, {"restore_confirm": "chatstack-old-server"}, "restore_confirm={host}"),
        (climbing_path, {}, "lists /etc/chatstack/../../root/.ssh/authorized_keys with mode 0600"),
        (unlisted_path, {}, "lists /etc/passwd with mode 0600"),
        (relative_path, {}, "lists etc/chatstack/secret_key with mode 0600"),
        (readable_secret, {}, "lists /etc/redis/chatstack.password with mode 0644"),
        (foreign_owner, {}, "gives /etc/chatstack/secret_key to nobody:root"),
        (damaged_database, {}, "db.sqlite3 in"),
        (changed_secret, {}, "files/etc/redis/chatstack.password in"),
        (corrupt_copy, {}, "is not one backup.yml wrote for an intact database"),
        (listed_twice, {}, "is not one backup.yml wrote for an intact database"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)  # fmt: skip
def test_restore_refuses_before_any_change(
    host, debian12_container, tmp_path, change, extra, expected
):
    container = debian12_container
    backup = tmp_path / "backup"
    manifest = write_backup(backup, container)
    change(backup, manifest)
    save(backup, manifest)
    variables = {"restore_from": str(backup), "restore_confirm": container} | extra
    variables = {name: value for name, value in variables.items() if value is not None}
    before = host.file(DATABASE).sha256sum

    result, seconds = run_playbook(
        container, tmp_path, "-e", json.dumps(variables), playbook="restore.yml"
    )
    output = result.stdout + result.stderr
    print(f"{change.__name__} {sorted(extra)}: refused after {seconds:.1f}s")
    assert result.returncode != 0, "restore.yml restored a backup it should have refused"
    assert expected.format(host=container) in output, output[-3000:]
    assert recap(result.stdout, container)["changed"] == 0
    assert host.file(DATABASE).sha256sum == before, "a refused restore changed the database"
    assert host.run(f"ls {DATABASE}.*").stdout == "", "a refused restore left files behind"


def test_restore_refuses_several_hosts(host, debian12_container, tmp_path):
    """Without -l, an inventory of several hosts would all get one host's data."""
    container = debian12_container
    backup = tmp_path / "backup"
    write_backup(backup, container)
    # Never contacted: the refusal comes first.
    hosts = {group: [container, "chatstack-second-server"] for group in SINGLE_HOST_GROUPS}
    variables = {"restore_from": str(backup), "restore_confirm": container}
    result, _ = run_playbook(hosts, tmp_path, "-e", json.dumps(variables), playbook="restore.yml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "this run targets 2 hosts" in output and "-l HOST" in output, output[-3000:]
    assert recap(result.stdout, container)["changed"] == 0
