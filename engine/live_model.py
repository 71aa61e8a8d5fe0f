"""Where the live model's choice (`/llm-model NAME`) is kept, so it outlives a restart and, with
Redis, is the same on every replica.

- FileChoice: data_dir/live_model.json, replaced atomically (one process);
- RedisChoice: one key under `sessions.redis_state_prefix` (JSON, signed like every state value),
  which each replica's ModelLineup polls every POLL_S, so a switch made on one reaches them all
  within about a second.
Blocking: the lineup calls them from a worker thread.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Protocol

from engine.config import Config
from engine.state_codec import Refused, StateCodec, refused

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often a replica looks at the shared choice


class LiveChoice(Protocol):
    shared: bool  # other processes may change it (poll it)

    def read(self) -> str | None:
        """The model chosen last, or None (never switched: the config's default)."""

    def write(self, name: str, by: str) -> None: ...

    def close(self) -> None: ...


class FileChoice:
    shared = False

    def __init__(self, path: Path):
        self._path = path

    def read(self) -> str | None:
        try:
            return str(json.loads(self._path.read_text())["model"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            log.warning("the stored live model is unreadable: the config's default serves", exc_info=True)
            return None

    def write(self, name: str, by: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        part = self._path.with_suffix(".part")
        with open(part, "w") as out:
            json.dump({"model": name, "by": by, "at": time.time()}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, self._path)

    def close(self) -> None:
        pass


class RedisChoice:
    shared = True

    def __init__(self, client, key: str, codec: StateCodec):
        self._client = client  # redis.Redis
        self._key = key
        self._codec = codec

    def read(self) -> str | None:
        raw = self._client.get(self._key)
        if raw is None:
            return None
        try:
            return str(self._codec.decode(self._key, raw)["model"])
        except (Refused, KeyError, TypeError) as exc:
            refused(self._key, exc)
            return None

    def write(self, name: str, by: str) -> None:
        self._client.set(self._key, self._codec.encode(self._key, {"model": name, "by": by, "at": time.time()}))

    def close(self) -> None:
        self._client.close()


def open_live_choice(config: Config) -> LiveChoice:
    """In Redis with `sessions.backend: redis`, else in data_dir (blocking: call it in a worker thread)."""
    sessions = config.sessions
    if sessions.backend == "redis":
        from engine.limits import redis_url
        from engine.redis_state import redis_client, state_codec

        client = redis_client(redis_url(sessions.redis_url_env, "sessions"))
        return RedisChoice(client, sessions.redis_state_prefix + "live_model", state_codec(config))
    return FileChoice(config.data_path / "live_model.json")
