"""The audit trail: every workspace-admin and operator act, and every refusal of one.

One entry says when, where (platform, workspace, channel), who (id, name, the role they held),
which act on what target, and the outcome: done, refused, or failed with the reference the user
was shown (the log line of that reference has the details). engine/authority.py writes them;
`/llm-audit` shows them (a workspace admin their workspace's, an operator every workspace's),
and `python bot.py audit export` writes them as JSON lines.

Kept where the other state is (data_dir/audit.sqlite, or Redis keys under the state prefix with
`sessions.backend: redis`), bounded: the newest `audit.keep` acts per workspace, and as many
refusals apart, so a member who is refused again and again cannot push the admins' acts out.
The same refusal repeated within REPEAT_WINDOW_S is counted on one entry (`repeats`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

REPEAT_WINDOW_S = 600.0  # the same refusal again within this long adds to the entry's repeats
MAX_REPEAT_KEYS = 10_000  # refusals remembered for coalescing before the memory is cleared
OUTCOMES = ("done", "refused", "failed")


@dataclass(frozen=True)
class AuditEntry:
    at: float  # when (Unix time); a repeated refusal's first time
    platform: str
    workspace: str
    channel: str
    user_id: str
    user_name: str
    role: str  # member | workspace_admin | operator: the role they held then
    act: str  # a name of engine/authority.py's ACTS
    target: str  # what it acted on: a model, a setting, a document's name
    outcome: str  # done | refused | failed
    reference: str = ""  # the reference the user saw (refused, failed)
    repeats: int = 1  # how many times this refusal came within REPEAT_WINDOW_S
    last_at: float = 0.0  # when it last came (repeats > 1)

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)


def _kind(outcome: str) -> str:
    return "r" if outcome == "refused" else "a"  # refusals are bounded apart from the acts


def _prefix(platform: str, workspace: str, kind: str = "") -> str:
    return f"{platform}|{workspace}|{kind + '|' if kind else ''}"


def _scope(platform: str | None, workspace: str | None) -> str:
    """The key prefix of a workspace's entries, a platform's, or ("") every one."""
    if platform is None:
        return ""
    return f"{platform}|" + (f"{workspace}|" if workspace is not None else "")


def _order(key: str) -> str:
    return key.rsplit("|", 1)[-1]  # zero-padded nanoseconds, then a random tail


class AuditStore:
    """The entries in a MutableMapping (a SqliteDict table, or Redis keys), keyed
    "platform|workspace|kind|time-random". Blocking: AuditLog calls it from a worker thread."""

    def __init__(self, mapping: MutableMapping, keep: int):
        self._db = mapping
        self._keep = keep
        self._slack = max(1, keep // 10)  # written past `keep` before a prune
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}  # prefix -> entries written since its last prune
        self._repeats: dict[tuple[str, str, str, str], tuple[str, float]] = {}  # refusal -> (key, first at)

    def add(self, entry: AuditEntry) -> None:
        prefix = _prefix(entry.platform, entry.workspace, _kind(entry.outcome))
        with self._lock:
            if entry.outcome == "refused" and self._repeated(prefix, entry):
                return
            key = f"{prefix}{int(entry.at * 1e9):020d}-{secrets.token_hex(3)}"
            self._db[key] = dataclasses.asdict(entry)
            if entry.outcome == "refused":
                if len(self._repeats) >= MAX_REPEAT_KEYS:
                    self._repeats.clear()
                self._repeats[(prefix, entry.user_id, entry.act, entry.target)] = (key, entry.at)
            self._written[prefix] = self._written.get(prefix, 0) + 1
            if self._written[prefix] > self._slack:
                self._prune(prefix)

    def _repeated(self, prefix: str, entry: AuditEntry) -> bool:
        """Count a refusal that came before within the window on its entry."""
        seen = self._repeats.get((prefix, entry.user_id, entry.act, entry.target))
        if seen is None or entry.at - seen[1] > REPEAT_WINDOW_S:
            return False
        stored = self._db.get(seen[0])
        if stored is None:
            return False
        self._db[seen[0]] = {**stored, "repeats": int(stored.get("repeats", 1)) + 1, "last_at": entry.at}
        return True

    def _prune(self, prefix: str) -> None:
        keys = sorted((k for k in list(self._db) if k.startswith(prefix)), key=_order)
        for key in keys[:-self._keep]:
            self._db.pop(key, None)
        self._written[prefix] = 0

    def prune_all(self) -> None:
        """Bring every workspace down to its bound (at open: `keep` may have been lowered)."""
        with self._lock:
            for prefix in {k.rsplit("|", 1)[0] + "|" for k in list(self._db)}:
                self._prune(prefix)

    def newest(self, limit: int, platform: str | None = None, workspace: str | None = None) -> list[AuditEntry]:
        """The newest `limit` entries, newest first: of one workspace, one platform, or all."""
        prefix = _scope(platform, workspace)
        keys = sorted((k for k in list(self._db) if k.startswith(prefix)), key=_order, reverse=True)
        return [e for e in (self._entry(k) for k in keys[:limit]) if e is not None]

    def entries(self, platform: str | None = None, workspace: str | None = None) -> Iterator[AuditEntry]:
        """Every entry kept, oldest first: of one workspace, one platform, or all."""
        prefix = _scope(platform, workspace)
        for key in sorted((k for k in list(self._db) if k.startswith(prefix)), key=_order):
            entry = self._entry(key)
            if entry is not None:
                yield entry

    def _entry(self, key: str) -> AuditEntry | None:
        data = self._db.get(key)  # pruned meanwhile by another process: skipped
        return AuditEntry(**data) if data else None

    def close(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            close()


class AuditLog:
    """The audit store for the event loop: every call runs in a worker thread."""

    def __init__(self, store: AuditStore):
        self.store = store

    async def add(self, entry: AuditEntry) -> None:
        try:
            await asyncio.to_thread(self.store.add, entry)
        except Exception:  # noqa: BLE001 - the act itself must not fail because its record could not be kept
            log.error("audit entry not kept", extra={"act": entry.act, "outcome": entry.outcome}, exc_info=True)

    async def newest(self, limit: int, platform: str | None = None, workspace: str | None = None) -> list[AuditEntry]:
        return await asyncio.to_thread(self.store.newest, limit, platform, workspace)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)


def open_audit_store(config: Config) -> AuditStore:
    """Where config.sessions.backend keeps state (blocking: call it in a worker thread)."""
    from engine.redis_sessions import open_state_mapping

    store = AuditStore(open_state_mapping(config, "audit.sqlite", "audit", "audit:"), config.audit.keep)
    store.prune_all()
    return store


def open_audit(config: Config) -> AuditLog:
    return AuditLog(open_audit_store(config))
