"""How state values are written to Redis: JSON, optionally signed, never pickles.

Anyone who can write to Redis could once run code in every bot process (the values were
pickles). Now a value is JSON; with a key in the environment variable `sessions.redis_hmac_key_env`
names, every value carries an HMAC-SHA256 over the Redis key and the JSON, so a value written
without the key, or copied from another key, is refused (logged, read as absent) and never used.

Pickles written by earlier versions are read once, by `legacy_pickle`, during the migration a
store runs when it first opens a prefix (logged): a restricted unpickler that builds only plain
containers and this app's dataclasses, so even a planted pickle cannot call anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import pickle
import sys
from typing import Any

log = logging.getLogger(__name__)

SIGNED = b"h1:"  # a signed value: h1:<hex digest>:<json>
_SAFE_BUILTINS = {"tuple", "list", "dict", "set", "frozenset", "str", "int", "float", "bool", "bytes", "complex"}


class Refused(ValueError):
    """A stored value that is not JSON, or whose signature does not hold: never used."""


def jsonable(value: Any) -> Any:
    """`value` with dataclasses as dicts, tuples and sets as lists (what json.dumps can write)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


class StateCodec:
    """JSON values, signed when `key` is given."""

    def __init__(self, key: bytes | None = None):
        self._key = key or None

    @property
    def signed(self) -> bool:
        return self._key is not None

    def _digest(self, redis_key: bytes | str, body: bytes) -> bytes:
        name = redis_key.encode() if isinstance(redis_key, str) else redis_key
        return hmac.new(self._key, name + b"\0" + body, hashlib.sha256).hexdigest().encode()

    def seal(self, redis_key: bytes | str, body: bytes | str) -> bytes | str:
        """`body` (JSON text) as stored at `redis_key`: signed when there is a key, else as it is."""
        if self._key is None:
            return body
        raw = body.encode() if isinstance(body, str) else body
        return SIGNED + self._digest(redis_key, raw) + b":" + raw

    def unseal(self, redis_key: bytes | str, raw: bytes | str) -> bytes:
        """The JSON text stored at `redis_key`; Refused when its signature fails (or is missing
        while there is a key, or present while there is none)."""
        raw = raw.encode() if isinstance(raw, str) else raw
        if raw.startswith(SIGNED):
            digest, _, body = raw[len(SIGNED):].partition(b":")
            if self._key is None or not hmac.compare_digest(digest, self._digest(redis_key, body)):
                raise Refused("bad signature" if self._key else "signed, and no key to check it")
            return body
        if self._key is not None:
            raise Refused("not signed")
        return raw

    def encode(self, redis_key: bytes | str, value: Any) -> bytes:
        body = json.dumps(jsonable(value), separators=(",", ":"), ensure_ascii=False).encode()
        return self.seal(redis_key, body)

    def decode(self, redis_key: bytes | str, raw: bytes | str) -> Any:
        """The value stored at `redis_key`; Refused when it is not JSON or its signature fails."""
        body = self.unseal(redis_key, raw)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refused("not JSON") from exc

    def is_current(self, redis_key: bytes | str, raw: bytes | str) -> bool:
        try:
            self.decode(redis_key, raw)
        except Refused:
            return False
        return True


def refused(redis_key: bytes | str, why: Exception) -> None:
    """Log a refused value (its key, never its content)."""
    name = redis_key.decode(errors="replace") if isinstance(redis_key, bytes) else redis_key
    log.error("redis value refused", extra={"key": name, "why": str(why)})


def codec_from_env(env_name: str) -> StateCodec:
    """The codec for the key in environment variable `env_name` (unsigned when unset or empty)."""
    key = os.environ.get(env_name, "") if env_name else ""
    return StateCodec(key.encode() if key else None)


class _LegacyUnpickler(pickle.Unpickler):
    """Builds plain containers and this app's dataclasses only: no function is ever called."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "collections" and name in ("OrderedDict", "deque"):
            return getattr(__import__("collections"), name)
        loaded = sys.modules.get(module)  # never imports: only modules this process already runs
        if module.split(".")[0] in ("engine", "adapters") and loaded is not None:
            found = getattr(loaded, name, None)
            if isinstance(found, type) and dataclasses.is_dataclass(found):
                return found
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def legacy_pickle(raw: bytes) -> Any:
    """A value pickled by an earlier version, for the one-time migration (raises on anything but
    containers and this app's dataclasses)."""
    return _LegacyUnpickler(io.BytesIO(raw)).load()
