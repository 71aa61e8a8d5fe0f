"""Small records an adapter keeps across restarts: which shared file became which document (so
deleting the file or its message forgets it), and which conversation a DM is in now.

A SqliteDict file under data_dir (one process), or Redis under the state prefix when several
processes serve one app (`sessions.backend: redis`). The store blocks, so every call runs in a
worker thread; values are small: in Redis they are JSON (a dataclass comes back as a dict, a tuple
as a list: the reader rebuilds them), never pickles (engine/redis_state.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)


class Records:
    """str -> JSON-able value, persisted; opened lazily on first use so tests and starts stay light."""

    def __init__(self, open_mapping: Callable[[], MutableMapping], name: str):
        self._open_mapping = open_mapping
        self._mapping: MutableMapping | None = None
        self._lock = asyncio.Lock()
        self.name = name

    async def _store(self) -> MutableMapping:
        if self._mapping is None:
            async with self._lock:
                if self._mapping is None:
                    self._mapping = await asyncio.to_thread(self._open_mapping)
        return self._mapping

    async def get(self, key: str) -> Any | None:
        store = await self._store()
        return await asyncio.to_thread(store.get, key)

    async def put(self, key: str, value: Any) -> None:
        store = await self._store()
        await asyncio.to_thread(store.__setitem__, key, value)

    async def pop(self, key: str) -> Any | None:
        store = await self._store()
        return await asyncio.to_thread(store.pop, key, None)

    async def close(self) -> None:
        mapping = self._mapping
        self._mapping = None
        # Duck-typed on purpose: open_state_mapping gives a plain MutableMapping, a SqliteDict
        # (third-party, has close) or engine.redis_state.RedisMapping (has close too).
        close = getattr(mapping, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def open_records(config: Config, platform: str, name: str) -> Records:
    """The `name` records of one platform's adapter, kept where config.sessions.backend says."""
    def open_mapping() -> MutableMapping:
        from engine.redis_state import open_state_mapping

        return open_state_mapping(config, f"{platform}_records.sqlite", name, f"{platform}:{name}:")

    return Records(open_mapping, f"{platform}/{name}")
