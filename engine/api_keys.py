"""API keys of the HTTP API: each one an identity in the authority model, kept by its hash only.

A key is shown once, when `python bot.py keys create` makes it; the store (api_keys.json under
data_dir, readable by the bot's user only) keeps its SHA-256 hash, never the key, beside the
identity it stands for: a name, a workspace, a role (member, admin of that workspace, operator)
and the document scopes it may read (`channel:NAME` for one channel's documents, `channel:*` for
any channel of its workspace, `workspace` for the workspace-wide scope). Admins and operators
read every scope of their workspace. The HTTP API reads the store at each request (a revoke
takes effect at once, without a restart); a file written by a running `keys` command is read
whole (written to a temporary file, then renamed over it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

from engine.authority import Role

KEY_PREFIX = "pk-"
ROLES = {"member": Role.MEMBER, "admin": Role.WORKSPACE_ADMIN, "operator": Role.OPERATOR}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCOPE = re.compile(r"^(workspace|channel:(\*|[A-Za-z0-9_.-]{1,80}))$")
DEFAULT_SCOPES = ("channel:api",)
STORE_FILE = "api_keys.json"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class ApiIdentity:
    """Who a key speaks for."""

    name: str
    workspace: str
    role: str  # member | admin | operator
    scopes: tuple[str, ...]
    created_at: float = 0.0

    @property
    def rank(self) -> Role:
        return ROLES[self.role]

    def may_read(self, scope: str) -> bool:
        """Whether this identity may search or list the documents of `scope` in its workspace."""
        if self.rank >= Role.WORKSPACE_ADMIN:
            return True
        return scope in self.scopes or (scope.startswith("channel:") and "channel:*" in self.scopes)


class KeyStore:
    """The keys' hashes and identities in one JSON file; thread-safe within a process."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / STORE_FILE
        self._lock = threading.Lock()
        self._cache: tuple[float, dict] | None = None  # (mtime, entries) as last read

    def _read(self) -> dict:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, json.loads(self.path.read_text(encoding="utf-8")))
        return self._cache[1]

    def _write(self, entries: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(entries, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        self._cache = None

    def create(self, name: str, workspace: str = "default", role: str = "member",
               scopes: tuple[str, ...] = DEFAULT_SCOPES) -> str:
        """A new key for `name` (which must be new): returned once, only its hash kept."""
        if not NAME.match(name):
            raise ValueError("a key's name is 1-64 letters, digits, '.', '_' or '-'")
        if not NAME.match(workspace):
            raise ValueError("a workspace is 1-64 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        bad = [s for s in scopes if not SCOPE.match(s)]
        if bad:
            raise ValueError(f"scopes are `channel:NAME`, `channel:*` or `workspace`, not {', '.join(bad)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            entries = dict(self._read())
            if name in entries:
                raise ValueError(f"a key named {name} exists; revoke it first")
            entries[name] = {"sha256": key_hash(key), "workspace": workspace, "role": role,
                             "scopes": list(scopes), "created_at": time.time()}
            self._write(entries)
        return key

    def revoke(self, name: str) -> bool:
        with self._lock:
            entries = dict(self._read())
            if entries.pop(name, None) is None:
                return False
            self._write(entries)
        return True

    def identities(self) -> list[ApiIdentity]:
        with self._lock:
            entries = self._read()
        return [_identity(name, e) for name, e in sorted(entries.items())]

    def verify(self, key: str) -> ApiIdentity | None:
        """The identity `key` stands for, or None; compared by hash, in constant time."""
        if not key.startswith(KEY_PREFIX):
            return None
        wanted = key_hash(key)
        with self._lock:
            entries = self._read()
        found = None
        for name, entry in entries.items():
            if hmac.compare_digest(entry["sha256"], wanted):
                found = _identity(name, entry)
        return found


def _identity(name: str, entry: dict) -> ApiIdentity:
    return ApiIdentity(name=name, workspace=entry["workspace"], role=entry["role"],
                       scopes=tuple(entry["scopes"]), created_at=entry.get("created_at", 0.0))
