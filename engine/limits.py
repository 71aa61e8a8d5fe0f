"""Rate limits: leaky buckets per user, per workspace, and a smaller one per user for ingests.

A bucket holds up to N requests (its per-minute size, which is also the burst) and drains at
N per minute. A request takes one from every bucket it counts against, or from none: a user
refused by the workspace bucket keeps their own allowance.

Over the limit, the user hears once when to retry; later refusals in that cool-down are silent
(ParleyError.silent), so a flood gets one reply, not two hundred.

Two stores behind one interface: in memory (aiolimiter, one process), or Redis (the same leaky
bucket in a Lua script, atomic on the server), so several bot processes share the buckets and a
restart keeps them.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from aiolimiter import AsyncLimiter

from engine.config import LimitsConfig
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User

log = logging.getLogger(__name__)

PERIOD_S = 60.0  # config sizes are per minute


@dataclass(frozen=True)
class Bucket:
    key: str
    size: float  # requests per PERIOD_S, also the largest burst
    kind: str  # "user" | "workspace" | "ingest"

    @property
    def rate_per_s(self) -> float:
        return self.size / PERIOD_S


@dataclass(frozen=True)
class Refusal:
    bucket: Bucket
    retry_after: float  # seconds until the bucket takes one more


class BucketStore(Protocol):
    async def acquire(self, buckets: Sequence[Bucket]) -> Refusal | None:
        """Take one from every bucket, or from none and say which one is full."""

    async def first_notice(self, key: str, seconds: float) -> bool:
        """True if no refusal was shown for `key` in the last `seconds` (and remember this one)."""

    async def close(self) -> None: ...


class MemoryBuckets:
    """aiolimiter buckets in this process; forgotten on restart."""

    SWEEP_EVERY = 1000  # acquisitions between sweeps of drained buckets

    def __init__(self) -> None:
        self._limiters: dict[str, AsyncLimiter] = {}
        self._notices: dict[str, float] = {}  # key -> monotonic time the cool-down ends
        self._since_sweep = 0

    def _limiter(self, bucket: Bucket) -> AsyncLimiter:
        limiter = self._limiters.get(bucket.key)
        if limiter is None or limiter.max_rate != bucket.size:
            limiter = self._limiters[bucket.key] = AsyncLimiter(bucket.size, PERIOD_S)
        return limiter

    @staticmethod
    def _retry_after(limiter: AsyncLimiter) -> float:
        # aiolimiter has no public "when": its level (leaked by has_capacity) gives it.
        level = getattr(limiter, "_level", limiter.max_rate)
        return max(0.0, level + 1 - limiter.max_rate) / (limiter.max_rate / limiter.time_period)

    async def acquire(self, buckets: Sequence[Bucket]) -> Refusal | None:
        limiters = [self._limiter(b) for b in buckets]
        worst: Refusal | None = None
        for bucket, limiter in zip(buckets, limiters):
            if not limiter.has_capacity():
                wait = self._retry_after(limiter)
                if worst is None or wait > worst.retry_after:
                    worst = Refusal(bucket, wait)
        if worst is not None:
            return worst
        for limiter in limiters:
            # Capacity was just checked and nothing awaited since: this returns without waiting.
            await limiter.acquire()
        self._sweep()
        return None

    def _sweep(self) -> None:
        self._since_sweep += 1
        if self._since_sweep < self.SWEEP_EVERY:
            return
        self._since_sweep = 0
        # A bucket drained to empty is the same as a new one: drop it so idle users cost nothing.
        self._limiters = {k: v for k, v in self._limiters.items() if not v.has_capacity(v.max_rate)}
        now = time.monotonic()
        self._notices = {k: until for k, until in self._notices.items() if until > now}

    async def first_notice(self, key: str, seconds: float) -> bool:
        now = time.monotonic()
        if self._notices.get(key, 0.0) > now:
            return False
        self._notices[key] = now + seconds
        return True

    async def close(self) -> None:
        self._limiters.clear()


# KEYS: bucket keys. ARGV: size1, rate1, size2, rate2, ... (rate per second).
# Each bucket is a hash {level, at}; the clock is the server's, so every process agrees.
# Returns {1} when taken from all, or {0, retry_after_seconds (string), index of the fullest}.
_LEAKY_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local worst, blocker = 0, 0
for i = 1, #KEYS do
  local size = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(v[1]) or 0
  local at = tonumber(v[2]) or now
  level = math.max(0, level - math.max(0, now - at) * rate)
  levels[i] = level
  local over = level + 1 - size
  if over > 0 and (blocker == 0 or over / rate > worst) then
    worst, blocker = over / rate, i
  end
end
if blocker > 0 then
  return {0, tostring(worst), blocker}
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i])
  local level = levels[i] + 1
  redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(level / rate * 1000) + 1000)
end
return {1}
"""


class RedisBuckets:
    """The same leaky buckets in Redis, shared by every bot process and kept across restarts."""

    def __init__(self, client, prefix: str = "parley:limits:"):
        self._client = client  # redis.asyncio.Redis
        self._prefix = prefix
        self._script = client.register_script(_LEAKY_BUCKET_LUA)
        self._last_error_log = 0.0

    @classmethod
    def from_url(cls, url: str, prefix: str) -> "RedisBuckets":
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    async def acquire(self, buckets: Sequence[Bucket]) -> Refusal | None:
        args: list[float] = []
        for b in buckets:
            args += [b.size, b.rate_per_s]
        try:
            result = await self._script(keys=[self._prefix + b.key for b in buckets], args=args)
        except Exception as exc:  # noqa: BLE001 - Redis down must not take the bot down with it
            self._log_outage(exc)
            return None  # fail open: serving without limits beats refusing everyone
        if int(result[0]) == 1:
            return None
        return Refusal(buckets[int(result[2]) - 1], float(result[1]))

    async def first_notice(self, key: str, seconds: float) -> bool:
        try:
            return bool(await self._client.set(self._prefix + "notice:" + key, b"1",
                                               px=max(1, math.ceil(seconds * 1000)), nx=True))
        except Exception as exc:  # noqa: BLE001
            self._log_outage(exc)
            return True

    def _log_outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 60:  # once a minute, not once a request
            self._last_error_log = now
            log.error("rate-limit store unreachable: requests are not limited", extra={"error": repr(exc)})

    async def close(self) -> None:
        await self._client.aclose()


def redis_url(env_name: str, what: str) -> str:
    """The Redis URL from the environment variable the config names (a URL may hold a password)."""
    import os

    from engine.config import ConfigError

    url = os.environ.get(env_name, "")
    if not url:
        raise ConfigError(f"{what}: backend is redis but the environment variable {env_name} is not set")
    return url


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


def _per_minute(size: float) -> str:
    return f"{size:g} a minute"


class RateLimiter:
    """Admission by rate: `check_answer` before a generation, `check_ingest` before a file."""

    def __init__(self, config: LimitsConfig, store: BucketStore):
        self.config = config
        self.store = store

    @classmethod
    def from_config(cls, config: LimitsConfig) -> "RateLimiter":
        if config.backend == "redis":
            store: BucketStore = RedisBuckets.from_url(redis_url(config.redis_url_env, "limits"),
                                                       config.redis_prefix)
        else:
            store = MemoryBuckets()
        return cls(config, store)

    @staticmethod
    def _scope(where: Conversation) -> str:
        # The {...} hash tag keeps one workspace's keys in one Redis Cluster slot (one script, many keys).
        return f"{{{where.platform}/{where.workspace}}}"

    async def check_answer(self, where: Conversation, user: User) -> None:
        scope = self._scope(where)
        buckets = [Bucket(f"{scope}:user:{user.id}", self.config.user_per_minute, "user")]
        if where.workspace != "dm":  # Discord DMs have no workspace: strangers must not share one bucket
            buckets.append(Bucket(f"{scope}:workspace", self.config.workspace_per_minute, "workspace"))
        await self._check("answer", where, user, buckets)

    async def check_ingest(self, where: Conversation, user: User) -> None:
        scope = self._scope(where)
        await self._check("ingest", where, user, [
            Bucket(f"{scope}:ingest:{user.id}", self.config.ingest_per_minute, "ingest")])

    async def _check(self, action: str, where: Conversation, user: User, buckets: list[Bucket]) -> None:
        refusal = await self.store.acquire(buckets)
        if refusal is None:
            return
        # One notice per user and action for the whole cool-down; the rest are silent.
        first = await self.store.first_notice(f"{self._scope(where)}:{action}:{user.id}", refusal.retry_after)
        error = ParleyError(ErrorCode.RATE_LIMITED, self._message(refusal), silent=not first)
        error.limit = refusal.bucket.kind  # which bucket, for the stats
        raise error

    @staticmethod
    def _message(refusal: Refusal) -> str:
        wait = _wait_text(refusal.retry_after)
        size = _per_minute(refusal.bucket.size)
        if refusal.bucket.kind == "workspace":
            return (f"This workspace is asking more than I can take ({size}). Try again in {wait}; "
                    "I'll ignore messages until then.")
        if refusal.bucket.kind == "ingest":
            return f"You're sharing files faster than I can read them ({size}). Try again in {wait}."
        return f"You're sending messages too fast ({size}). Try again in {wait}; I'll ignore messages until then."

    async def close(self) -> None:
        await self.store.close()
