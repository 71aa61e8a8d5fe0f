"""Chat sessions: one per thread, persisted so a restart (even kill -9) loses no answered turn.

The store is any MutableMapping of session key -> Session: a SqliteDict under the data dir by
default (autocommit, so every answered turn is on disk before the next message), or a shared
engine such as Redis when several bot processes serve one workspace.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from engine.types import ThreadMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str
    user_id: str
    at: float
    user_name: str = ""  # the speaker's display name, shown to the model when several people talk
    message_id: str = ""  # the platform's id of the message (Slack ts, Discord snowflake), if known


@dataclass(frozen=True)
class Session:
    key: str
    turns: tuple[Turn, ...] = ()
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    settings: dict = field(default_factory=dict)  # a thread keeps the settings it started with


def missed_turns(turns: Sequence[Turn], earlier: Sequence[ThreadMessage], now: float) -> tuple[Turn, ...]:
    """The thread messages (oldest first) a session has not seen: all of them for a new session;
    for one that exists, the people's messages after the last one it holds (its own answers are
    in it already). Nothing when the session's messages are not among them (nowhere to place them)."""
    if turns:
        known = {t.message_id for t in turns if t.message_id}
        anchor = max((i for i, m in enumerate(earlier) if m.message_id in known), default=None)
        if anchor is None:
            return ()
        earlier = [m for m in earlier[anchor + 1:] if m.role == "user" and m.message_id not in known]
    return tuple(Turn(m.role, m.text, m.user_id, now, user_name=m.user_name, message_id=m.message_id)
                 for m in earlier if m.text.strip())


class SessionStore:
    """Sessions by key. Blocking calls: the engine runs them in a worker thread."""

    def __init__(self, mapping: MutableMapping):
        self._sessions = mapping
        self._lock = threading.Lock()  # read-modify-write of one session is not atomic otherwise

    @classmethod
    def open_sqlite(cls, path: Path) -> "SessionStore":
        from sqlitedict import SqliteDict

        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(SqliteDict(str(path), tablename="sessions", autocommit=True))

    def get(self, key: str) -> Session | None:
        return self._sessions.get(key)

    def exists(self, key: str) -> bool:
        return key in self._sessions

    def append(self, key: str, *turns: Turn, settings: dict | None = None) -> Session:
        """Add turns to a session (creating it), written through to the store at once."""
        with self._lock:
            now = time.time()
            session = self._sessions.get(key) or Session(key=key, created_at=now, settings=dict(settings or {}))
            session = replace(session, turns=session.turns + tuple(turns), updated_at=now)
            self._sessions[key] = session
            return session

    def set_settings(self, key: str, settings: dict) -> Session:
        with self._lock:
            now = time.time()
            session = self._sessions.get(key) or Session(key=key, created_at=now)
            session = replace(session, settings=dict(settings), updated_at=now)
            self._sessions[key] = session
            return session

    def delete(self, key: str) -> bool:
        try:
            del self._sessions[key]
            return True
        except KeyError:
            return False

    def expire_idle(self, max_idle_seconds: float, now: float | None = None) -> int:
        """Forget sessions idle longer than max_idle_seconds; returns how many went."""
        cutoff = (now or time.time()) - max_idle_seconds
        stale = [key for key, session in self._sessions.items() if session.updated_at < cutoff]
        for key in stale:
            self.delete(key)
        if stale:
            log.info("expired idle sessions", extra={"count": len(stale)})
        return len(stale)

    def count(self) -> int:
        return len(self._sessions)

    def active_since(self, since: float) -> int:
        return sum(1 for s in self._sessions.values() if s.updated_at >= since)

    def close(self) -> None:
        close = getattr(self._sessions, "close", None)
        if close:
            close()
