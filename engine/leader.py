"""One leader for a job that every replica schedules but only one should run at a time (the daily
knowledge check): a Redis lock with a lease when the state is in Redis, a process lock otherwise.

The Redis lock is `SET key token NX PX lease`: the holder refreshes the lease while its job runs
and deletes the key when done, both only while the key still holds its token; a holder killed
mid-job lets the lease run out, and the next replica's schedule takes over.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import AsyncIterator, Protocol

log = logging.getLogger(__name__)

LEASE_S = 300.0  # a leader silent this long is dead

_REFRESH = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Leader(Protocol):
    def lead(self, job: str, lease_s: float = LEASE_S) -> contextlib.AbstractAsyncContextManager[bool]:
        """Yields whether this process leads `job` now (False: another runs it)."""
        ...

    async def close(self) -> None: ...


class LocalLeader:
    """One process: the job runs unless a run of it is already going."""

    def __init__(self) -> None:
        self._running: set[str] = set()

    @contextlib.asynccontextmanager
    async def lead(self, job: str, lease_s: float = LEASE_S) -> AsyncIterator[bool]:
        if job in self._running:
            yield False
            return
        self._running.add(job)
        try:
            yield True
        finally:
            self._running.discard(job)

    async def close(self) -> None:
        return None


class RedisLeader:
    """Replicas sharing one Redis: whoever sets the job's key leads it until done or its lease ends."""

    def __init__(self, client, prefix: str):
        self._client = client  # redis.asyncio.Redis
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str) -> "RedisLeader":
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    @contextlib.asynccontextmanager
    async def lead(self, job: str, lease_s: float = LEASE_S) -> AsyncIterator[bool]:
        key = f"{self._prefix}{job}"
        token = uuid.uuid4().hex
        lease_ms = int(lease_s * 1000)
        if not await self._client.set(key, token, nx=True, px=lease_ms):
            log.info("another replica leads this job", extra={"job": job})
            yield False
            return
        keeper = asyncio.create_task(self._keep(key, token, lease_s))
        try:
            yield True
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await self._client.eval(_RELEASE, 1, key, token)
            except Exception:  # noqa: BLE001 - the lease runs out on its own
                log.warning("leader lock not released", extra={"job": job}, exc_info=True)

    async def _keep(self, key: str, token: str, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                await self._client.eval(_REFRESH, 1, key, token, int(lease_s * 1000))
            except Exception:  # noqa: BLE001 - tried again at the next third of the lease
                log.warning("leader lease not refreshed", extra={"key": key}, exc_info=True)

    async def close(self) -> None:
        await self._client.aclose()


def open_leader(config) -> Leader:
    """A RedisLeader when the state is in Redis (config.sessions.backend), else a LocalLeader."""
    sessions = config.sessions
    if sessions.backend != "redis":
        return LocalLeader()
    from engine.buckets import redis_url

    return RedisLeader.from_url(redis_url(sessions.redis_url_env, "sessions"), f"{sessions.redis_state_prefix}leader:")
