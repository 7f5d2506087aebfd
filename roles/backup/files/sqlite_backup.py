#!/usr/bin/env python3
"""Copy a live SQLite database consistently, or check a copy, as the file's owner.

Run as root on the host by playbooks/backup.yml and restore.yml. It switches
to the database file's owner first: SQLite may create the -wal and -shm files
of a database in WAL mode, and root-owned ones would lock the app out of its
own database. What it creates is private (umask 077).

Usage:
  sqlite_backup.py SOURCE DEST   copy SOURCE to DEST with SQLite's online backup API
  sqlite_backup.py --check FILE  only check FILE
Prints {"integrity": ..., "bytes": ..., "sha1": ...} of DEST or FILE; fails
unless SQLite's integrity_check says "ok".
"""

import hashlib
import json
import os
import sqlite3
import sys


def become_owner_of(path: str) -> None:
    owner = os.stat(path)
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)
    os.umask(0o077)


def backup(source_path: str, dest_path: str) -> None:
    # mode=rw: a wrong path fails instead of backing up a new, empty database.
    source = sqlite3.connect(f"file:{source_path}?mode=rw", uri=True, timeout=30)
    dest = sqlite3.connect(dest_path)
    source.backup(dest)
    source.close()
    # One self-contained file: a restore then has no -wal file to carry along.
    dest.execute("PRAGMA journal_mode=DELETE")
    dest.close()


def describe(path: str) -> dict:
    # mode=ro: checking never changes the file (nor creates a journal).
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    (integrity,) = database.execute("PRAGMA integrity_check").fetchone()
    database.close()
    with open(path, "rb") as copy:
        sha1 = hashlib.file_digest(copy, "sha1").hexdigest()
    return {"integrity": integrity, "bytes": os.path.getsize(path), "sha1": sha1}


def main() -> int:
    if sys.argv[1] == "--check":
        path = sys.argv[2]
        become_owner_of(path)
    else:
        source_path, path = sys.argv[1:3]
        become_owner_of(source_path)
        backup(source_path, path)
    result = describe(path)
    print(json.dumps(result))
    return 0 if result["integrity"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
