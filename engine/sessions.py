"""Chat sessions: one per thread, persisted so a restart (even kill -9) loses no answered turn.

A session is a small header (settings, timestamps, the fold of its oldest turns) and its turns,
stored apart: an answer appends its two turns and rewrites nothing else, and reading a thread
reads its header and its stored turns, never its whole life. Past `sessions.max_turns` the oldest
turns are folded into the header (turns.Folded: what the prompt's summary line of older turns
needs) and deleted, so a thread's storage is bounded. The store counts active sessions from an
index by last activity, so /llm-stats and /metrics read no session.

Backends: SqliteSessions here (data_dir/sessions.sqlite, the default) and RedisSessions
(engine/redis_sessions.py) when several bot processes serve one workspace. Both read the layout
before this one (pickled Session objects, one per key) and convert it.
"""
from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Protocol, Sequence

from engine.turns import DEFAULT_MAX_TURNS, NOTHING_FOLDED, Folded, Session, Turn, json_dict, missed_turns, to_json

__all__ = ["DEFAULT_MAX_TURNS", "NOTHING_FOLDED", "Folded", "Session", "SessionBackend", "SessionStore", "SqliteSessions", "Turn",
           "compacted", "missed_turns"]

log = logging.getLogger(__name__)


def compacted(session: Session, max_turns: int) -> Session:
    """`session` with all but its newest `max_turns` turns folded (a session read from the old layout)."""
    excess = len(session.turns) - max_turns
    if excess <= 0:
        return session
    return replace(session, turns=session.turns[excess:], folded=session.folded.fold(session.turns[:excess]))


class SessionBackend(Protocol):
    """Where sessions live. Every call blocks; each write is atomic (and compacts past max_turns)."""

    max_turns: int

    def read(self, key: str) -> Session | None: ...

    def append(self, key: str, turns: Sequence[Turn], settings: dict | None, now: float) -> int:
        """Add turns (creating the session with `settings`); returns the turns stored after it."""

    def set_settings(self, key: str, settings: dict, now: float) -> None: ...

    def put(self, session: Session) -> None:
        """Store a whole session as given (replacing any), compacted past max_turns."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def keys(self) -> list[str]: ...

    def count(self) -> int: ...

    def active_since(self, since: float) -> int: ...

    def expire_idle(self, cutoff: float) -> int:
        """Delete the sessions last active before `cutoff` (checked again as each goes)."""

    def close(self) -> None: ...


class SessionStore:
    """Sessions by key. Blocking calls: the engine runs them in a worker thread."""

    def __init__(self, backend: SessionBackend):
        self.backend = backend

    @classmethod
    def open_sqlite(cls, path: Path, max_turns: int = DEFAULT_MAX_TURNS) -> "SessionStore":
        return cls(SqliteSessions(path, max_turns))

    @property
    def max_turns(self) -> int:
        return self.backend.max_turns

    def get(self, key: str) -> Session | None:
        return self.backend.read(key)

    def exists(self, key: str) -> bool:
        return self.backend.exists(key)

    def append(self, key: str, *turns: Turn, settings: dict | None = None) -> int:
        """Add turns to a session (creating it), written through to the store at once; returns how
        many turns it stores now (the oldest are folded past max_turns)."""
        return self.backend.append(key, turns, settings, time.time())

    def set_settings(self, key: str, settings: dict) -> None:
        self.backend.set_settings(key, dict(settings), time.time())

    def put(self, session: Session) -> None:
        """Store a whole session as given (a restored or imported thread)."""
        self.backend.put(session)

    def delete(self, key: str) -> bool:
        return self.backend.delete(key)

    def expire_idle(self, max_idle_seconds: float, now: float | None = None) -> int:
        """Forget sessions idle longer than max_idle_seconds; returns how many went."""
        gone = self.backend.expire_idle((now or time.time()) - max_idle_seconds)
        if gone:
            log.info("expired idle sessions", extra={"count": gone})
        return gone

    def keys(self) -> list[str]:
        return self.backend.keys()

    def count(self) -> int:
        return self.backend.count()

    def active_since(self, since: float) -> int:
        """Sessions written to since `since` (from the index by last activity: no session is read)."""
        return self.backend.active_since(since)

    def close(self) -> None:
        self.backend.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS session_heads (
    key TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}', folded TEXT NOT NULL DEFAULT '',
    first_seq INTEGER NOT NULL DEFAULT 0, next_seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS session_heads_by_activity ON session_heads (updated_at);
CREATE TABLE IF NOT EXISTS session_turns (
    key TEXT NOT NULL, seq INTEGER NOT NULL, turn TEXT NOT NULL, PRIMARY KEY (key, seq)) WITHOUT ROWID;
"""
LEGACY_TABLE = "sessions"  # the SqliteDict table of pickled Session objects this layout replaces


class SqliteSessions:
    """Sessions in SQLite (WAL, synchronous FULL): a header row per session (indexed by last
    activity) and a row per turn keyed by (session, sequence). JSON throughout."""

    def __init__(self, path: Path, max_turns: int = DEFAULT_MAX_TURNS, *, durable: bool = True):
        """`durable`: every write reaches the disk before it returns (the default: an answered turn
        survives even a power cut); False leaves that to the OS (a bulk import: still safe from kill -9)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_turns = max_turns
        self._lock = threading.Lock()  # one connection, shared by the worker threads
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._migrate()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, key: str) -> Session | None:
        with self._lock:
            head = self._db.execute("SELECT created_at, updated_at, settings, folded, first_seq, next_seq "
                                    "FROM session_heads WHERE key = ?", (key,)).fetchone()
            if head is None:
                return None
            created, updated, settings, folded, first, after = head
            rows = self._db.execute("SELECT turn FROM session_turns WHERE key = ? AND seq >= ? ORDER BY seq",
                                    (key, max(first, after - self.max_turns))).fetchall()
        return Session(key, tuple(Turn.from_json(r[0]) for r in rows), created, updated,
                       json_dict(settings), Folded.from_json(folded))

    def append(self, key: str, turns: Sequence[Turn], settings: dict | None, now: float) -> int:
        with self._write() as db:
            first, after = db.execute(
                "INSERT INTO session_heads (key, created_at, updated_at, settings) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at RETURNING first_seq, next_seq",
                (key, now, now, to_json(settings or {}))).fetchone()
            return self._add_turns(db, key, first, after, turns)

    def _add_turns(self, db: sqlite3.Connection, key: str, first: int, after: int, turns: Sequence[Turn]) -> int:
        db.executemany("INSERT INTO session_turns (key, seq, turn) VALUES (?, ?, ?)",
                       [(key, after + i, turn.to_json()) for i, turn in enumerate(turns)])
        after += len(turns)
        db.execute("UPDATE session_heads SET next_seq = ? WHERE key = ?", (after, key))
        if after - first > self.max_turns:
            self._fold(db, key, after - self.max_turns)
        return min(after - first, self.max_turns)

    def _fold(self, db: sqlite3.Connection, key: str, cut: int) -> None:
        """Fold the turns before sequence `cut` into the header and delete them."""
        oldest = [Turn.from_json(r[0]) for r in db.execute(
            "SELECT turn FROM session_turns WHERE key = ? AND seq < ? ORDER BY seq", (key, cut))]
        (raw,) = db.execute("SELECT folded FROM session_heads WHERE key = ?", (key,)).fetchone()
        db.execute("DELETE FROM session_turns WHERE key = ? AND seq < ?", (key, cut))
        db.execute("UPDATE session_heads SET folded = ?, first_seq = ? WHERE key = ?",
                   (Folded.from_json(raw).fold(oldest).to_json(), cut, key))

    def set_settings(self, key: str, settings: dict, now: float) -> None:
        with self._write() as db:
            db.execute("INSERT INTO session_heads (key, created_at, updated_at, settings) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at, settings = excluded.settings",
                       (key, now, now, to_json(settings)))

    def put(self, session: Session) -> None:
        with self._write() as db:
            self._put(db, session)

    def _put(self, db: sqlite3.Connection, session: Session) -> None:
        db.execute("DELETE FROM session_turns WHERE key = ?", (session.key,))
        db.execute("INSERT OR REPLACE INTO session_heads (key, created_at, updated_at, settings, folded) "
                   "VALUES (?, ?, ?, ?, ?)", (session.key, session.created_at, session.updated_at,
                                              to_json(session.settings or {}),
                                              session.folded.to_json() if session.folded else ""))
        self._add_turns(db, session.key, 0, 0, session.turns)

    def exists(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM session_heads WHERE key = ?", (key,)).fetchone() is not None

    def delete(self, key: str) -> bool:
        with self._write() as db:
            db.execute("DELETE FROM session_turns WHERE key = ?", (key,))
            return db.execute("DELETE FROM session_heads WHERE key = ?", (key,)).rowcount > 0

    def keys(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT key FROM session_heads ORDER BY key")]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM session_heads").fetchone()[0]

    def active_since(self, since: float) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM session_heads WHERE updated_at >= ?", (since,)).fetchone()[0]

    def expire_idle(self, cutoff: float) -> int:
        with self._write() as db:
            db.execute("DELETE FROM session_turns WHERE key IN "
                       "(SELECT key FROM session_heads WHERE updated_at < ?)", (cutoff,))
            return db.execute("DELETE FROM session_heads WHERE updated_at < ?", (cutoff,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        """Convert the sessions the old layout pickled (one SqliteDict row each) in one transaction,
        folding past max_turns; a row that cannot be read stays where it was, and is logged."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (LEGACY_TABLE,)).fetchone() is None:
                return
            moved = 0
            for key, value in db.execute(f'SELECT key, value FROM "{LEGACY_TABLE}"').fetchall():
                try:
                    session = pickle.loads(bytes(value))  # written by this app's earlier versions only
                except Exception:  # noqa: BLE001 - one unreadable row must not stop the others
                    log.warning("session not converted", extra={"session": key}, exc_info=True)
                    continue
                self._put(db, replace(session, key=key, folded=getattr(session, "folded", NOTHING_FOLDED)))
                db.execute(f'DELETE FROM "{LEGACY_TABLE}" WHERE key = ?', (key,))
                moved += 1
            if db.execute(f'SELECT COUNT(*) FROM "{LEGACY_TABLE}"').fetchone()[0] == 0:
                db.execute(f'DROP TABLE "{LEGACY_TABLE}"')
        if moved:
            log.info("sessions converted to the turn-by-turn layout", extra={"count": moved})
