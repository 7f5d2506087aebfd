#!/usr/bin/env python3
"""Copy a live SQLite database consistently, with SQLite's online backup API.

Run as root on the host by playbooks/backup.yml. It switches to the database
file's owner first: SQLite may create the -wal and -shm files of a database in
WAL mode, and root-owned ones would lock the app out of its own database.

Usage: sqlite_backup.py SOURCE DEST. Prints {"integrity": ..., "bytes": ...}.
"""

import json
import os
import sqlite3
import sys


def main() -> int:
    source_path, dest_path = sys.argv[1:3]
    owner = os.stat(source_path)
    os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)

    # mode=rw: a wrong path fails instead of backing up a new, empty database.
    source = sqlite3.connect(f"file:{source_path}?mode=rw", uri=True, timeout=30)
    dest = sqlite3.connect(dest_path)
    source.backup(dest)
    source.close()
    # One self-contained file: a restore then has no -wal file to carry along.
    dest.execute("PRAGMA journal_mode=DELETE")
    (integrity,) = dest.execute("PRAGMA integrity_check").fetchone()
    dest.close()
    print(json.dumps({"integrity": integrity, "bytes": os.path.getsize(dest_path)}))
    return 0 if integrity == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
