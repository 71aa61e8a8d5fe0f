"""SqliteDict files as Parley opens them: WAL and synchronous=NORMAL.

sqlitedict sets `synchronous=OFF` on its connection (a power cut may corrupt the file, a kill -9
may lose what it said it wrote); Parley's files run in WAL mode with synchronous=NORMAL instead,
so a committed write survives the process dying, and only an OS crash may lose the last ones.
"""
from __future__ import annotations

from pathlib import Path


def open_sqlitedict(path: Path, table: str):
    """Table `table` of the SqliteDict file `path` (created with its folder), autocommitted."""
    from sqlitedict import SqliteDict

    path.parent.mkdir(parents=True, exist_ok=True)
    db = SqliteDict(str(path), tablename=table, autocommit=True, journal_mode="WAL")
    db.conn.execute("PRAGMA synchronous=NORMAL")  # the same connection its writes use, before them
    return db


def sqlite_pragmas(db) -> tuple[str, int]:
    """(journal_mode, synchronous) of an open SqliteDict (for tests and checks)."""
    journal = db.conn.select_one("PRAGMA journal_mode")[0]
    synchronous = db.conn.select_one("PRAGMA synchronous")[0]
    return str(journal), int(synchronous)
