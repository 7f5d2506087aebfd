#!/usr/bin/python3
"""Back up the site's data on this host; run by chatstack-backup.service as root.

Reads /etc/chatstack-backup.json (written by the backup role). Each run makes
DIRECTORY/TIME/ (0700; files 0600, owner root) with the layout restore.yml
reads from the controller too: manifest.json, db.sqlite3 (SQLite's online
backup, integrity_check'ed) or db.dump (pg_dump's custom format, read back
with pg_restore --list), files/<path> for each secret file present and
letsencrypt.tar when that directory exists. Then, with age recipients, it
encrypts the backup to TIME.tar.age and rsyncs those files (and only those)
to the backup host; applies the retention; and writes the time and size of
the last good backup for the node exporter. A failed step fails the unit and
leaves the metric as it was, so the age alert fires.
"""

import datetime
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path("/etc/chatstack-backup.json")
SQLITE_BACKUP = "/usr/local/lib/chatstack-backup/sqlite_backup.py"
STAMP = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def sha1(path: Path) -> str:
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha1").hexdigest()


def describe(path: Path) -> dict:
    """Owner and mode of a live file, as Ansible's stat names them (restore.yml compares)."""
    st = path.stat()
    return {
        "path": str(path),
        "owner": pwd.getpwuid(st.st_uid).pw_name,
        "group": grp.getgrgid(st.st_gid).gr_name,
        "mode": f"{st.st_mode & 0o7777:04o}",
    }


def back_up_sqlite(database: Path, work: Path) -> dict:
    # sqlite_backup.py runs as the database's owner (see there), who may not enter
    # the backup directory: it writes into a private directory of its own first
    # (the service's PrivateTmp).
    with tempfile.TemporaryDirectory() as scratch:
        os.chown(scratch, database.stat().st_uid, -1)
        copy = Path(scratch) / "db.sqlite3"
        result = subprocess.run(
            [sys.executable, SQLITE_BACKUP, str(database), str(copy)],
            check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        shutil.copyfile(copy, work / "db.sqlite3")
    checked = json.loads(result.stdout)
    if sha1(work / "db.sqlite3") != checked["sha1"]:
        raise SystemExit("the copy of the database changed while it was moved")
    return {**describe(database), "checksum": checked["sha1"], "integrity": checked["integrity"]}


def back_up_postgresql(name: str, work: Path) -> dict:
    dump = work / "db.dump"
    with dump.open("wb") as out:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_dump", "--format=custom", f"--dbname={name}"],
            check=True, stdout=out,
        )  # fmt: skip
    # Reads the whole archive's table of contents: a truncated dump fails here.
    subprocess.run(["pg_restore", "--list", str(dump)], check=True, stdout=subprocess.DEVNULL)
    return {"format": "pg_dump", "name": name, "checksum": sha1(dump), "integrity": "ok"}


def back_up_files(paths: list[str], work: Path) -> list[dict]:
    entries = []
    for path in map(Path, paths):
        if not path.is_file():
            continue
        copy = work / "files" / path.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        entries.append({**describe(path), "checksum": sha1(copy)})
    return entries


def make_backup(config: dict, stamp: str) -> Path:
    directory = Path(config["directory"])
    work = directory / f".partial-{stamp}"
    work.mkdir(mode=0o700)
    if config["engine"] == "sqlite":
        database = back_up_sqlite(Path(config["database"]), work)
    else:
        database = back_up_postgresql(config["postgresql_database"], work)
    manifest = {
        "host": config["host"],
        "created": stamp,
        "engine": config["engine"],
        "database": database,
        "files": back_up_files(config["secret_files"], work),
    }
    letsencrypt = Path(config["letsencrypt"])
    if letsencrypt.is_dir():
        subprocess.run(
            ["tar", "-C", str(letsencrypt.parent), "-cf", str(work / "letsencrypt.tar"),
             letsencrypt.name],
            check=True,
        )  # fmt: skip
        manifest["letsencrypt"] = "letsencrypt.tar"
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if database["integrity"] != "ok":
        raise SystemExit(f"the copy of the database is damaged: {database['integrity']}")
    done = directory / stamp
    work.rename(done)
    return done


def encrypt(backup: Path, recipients: list[str]) -> Path:
    encrypted = backup.with_name(backup.name + ".tar.age")
    partial = encrypted.with_name("." + encrypted.name)
    tar = subprocess.Popen(
        ["tar", "-C", str(backup.parent), "-cf", "-", backup.name], stdout=subprocess.PIPE
    )
    age = [arg for recipient in recipients for arg in ("--recipient", recipient)]
    subprocess.run(["age", *age, "--output", str(partial)], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise SystemExit("tar failed while the backup was encrypted")
    partial.rename(encrypted)
    return encrypted


def prune(directory: Path, keep_count: int, keep_days: int) -> None:
    """Keeps the newest keep_count backups and any younger than keep_days."""
    backups = sorted((p for p in directory.iterdir() if STAMP.match(p.name)), reverse=True)
    oldest_kept = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=keep_days)
    for old in backups[keep_count:]:
        created = datetime.datetime.strptime(old.name, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC
        )
        if created < oldest_kept:
            shutil.rmtree(old)
            old.with_name(old.name + ".tar.age").unlink(missing_ok=True)
    # What a failed run left behind.
    for partial in directory.glob(".partial-*"):
        shutil.rmtree(partial)


def copy_off_host(directory: Path, remote: dict) -> None:
    ssh = (
        f"ssh -i {remote['key']} -p {remote['port']} -o BatchMode=yes"
        f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={remote['known_hosts']}"
    )
    # --delete: the remote keeps what this host keeps. The remote's rrsync pins
    # the destination to this host's directory.
    subprocess.run(
        ["rsync", "--archive", "--delete", "--include=*.tar.age", "--exclude=*", "-e", ssh,
         f"{directory}/", f"{remote['user']}@{remote['address']}:"],
        check=True,
    )  # fmt: skip


def write_metric(config: dict, name: str, lines: list[str]) -> None:
    """Atomically: the node exporter never reads half a file."""
    textfile = Path(config["textfile_directory"])
    if not textfile.is_dir():
        return
    out = textfile / f"{name}.prom"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    tmp.rename(out)


def gauge(name: str, help_text: str, value: float, labels: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {value}"]


def main() -> int:
    config = json.loads(CONFIG.read_text())
    os.umask(0o077)
    directory = Path(config["directory"])
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = make_backup(config, stamp)
    size = sum(f.stat().st_size for f in backup.rglob("*") if f.is_file())
    labels = f'engine="{config["engine"]}"'
    write_metric(
        config,
        "chatstack_backup",
        gauge("chatstack_backup_last_success_timestamp_seconds",
              "When the last good backup was made (Unix time).", time.time(), labels)
        + gauge("chatstack_backup_last_size_bytes",
                "Size of the last good backup.", size, labels)
        + gauge("chatstack_backup_max_age_seconds",
                "Age beyond which the last good backup is overdue.", config["max_age_seconds"],
                labels),
    )  # fmt: skip
    if config["recipients"]:
        encrypt(backup, config["recipients"])
    prune(directory, config["keep_count"], config["keep_days"])
    if config["remote"]:
        copy_off_host(directory, config["remote"])
        write_metric(
            config,
            "chatstack_backup_offsite",
            gauge("chatstack_backup_offsite_last_success_timestamp_seconds",
                  "When the backups were last copied off the host (Unix time).", time.time(),
                  labels),
        )  # fmt: skip
    print(f"backed up to {backup} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
