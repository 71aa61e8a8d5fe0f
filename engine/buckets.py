"""Leaky buckets, the store behind the rate limits (engine/limits.py): in this process, or in Redis.

A bucket holds up to `size` units and drains at `size` per `period_s`, continuously. `acquire`
takes `amount` from every bucket it is given, or from none and says which one is full ("take");
"peek" only says whether it would; "force" takes even past the size (work already begun is
charged after the fact: the bucket then needs longer to drain before it takes more).

Two stores behind one interface, the same arithmetic in both: in memory (one process, forgotten
on restart), or Redis (a Lua script, atomic on the server and on its clock), so several bot
processes share the buckets and a restart keeps them.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

log = logging.getLogger(__name__)

Mode = Literal["take", "peek", "force"]
_MODES = {"take": 0, "peek": 1, "force": 2}
_SLACK = 1e-9  # float noise: a bucket exactly full still takes what fits exactly


@dataclass(frozen=True)
class Bucket:
    key: str
    size: float  # units per period, also the largest burst
    kind: str  # "user" | "workspace" | "ingest" | "summary" | "summary_workspace": for replies and stats
    period_s: float = 60.0

    @property
    def rate_per_s(self) -> float:
        return self.size / self.period_s


@dataclass(frozen=True)
class Refusal:
    bucket: Bucket
    retry_after: float  # seconds until the bucket takes the amount asked
    left: float = 0.0  # units it would take now


class BucketStore(Protocol):
    async def acquire(self, buckets: Sequence[Bucket], amount: float = 1.0, mode: Mode = "take") -> Refusal | None:
        """Take `amount` from every bucket, or from none and say which one is fullest (see `Mode`)."""

    async def first_notice(self, key: str, seconds: float) -> bool:
        """True if no refusal was shown for `key` in the last `seconds` (and remember this one)."""

    async def close(self) -> None: ...


@dataclass
class _Level:
    level: float
    at: float  # monotonic seconds


def _refusal(buckets: Sequence[Bucket], levels: Sequence[float], amount: float) -> Refusal | None:
    """The bucket that would wait longest for `amount`, or None when every one takes it now."""
    worst: Refusal | None = None
    for bucket, level in zip(buckets, levels):
        over = level + amount - bucket.size
        if over > _SLACK:
            wait = over / bucket.rate_per_s
            if worst is None or wait > worst.retry_after:
                worst = Refusal(bucket, wait, max(0.0, bucket.size - level))
    return worst


class MemoryBuckets:
    """Buckets in this process; forgotten on restart."""

    SWEEP_EVERY = 1000  # acquisitions between sweeps of drained buckets

    def __init__(self) -> None:
        self._levels: dict[str, _Level] = {}
        self._rates: dict[str, float] = {}  # key -> drain per second, for the sweep
        self._notices: dict[str, float] = {}  # key -> monotonic time the cool-down ends
        self._since_sweep = 0

    def _level(self, bucket: Bucket, now: float) -> float:
        held = self._levels.get(bucket.key)
        if held is None:
            return 0.0
        return max(0.0, held.level - (now - held.at) * bucket.rate_per_s)

    async def acquire(self, buckets: Sequence[Bucket], amount: float = 1.0, mode: Mode = "take") -> Refusal | None:
        now = time.monotonic()
        levels = [self._level(b, now) for b in buckets]
        if mode != "force":
            refusal = _refusal(buckets, levels, amount)
            if refusal is not None or mode == "peek":
                return refusal
        for bucket, level in zip(buckets, levels):
            self._levels[bucket.key] = _Level(level + amount, now)
            self._rates[bucket.key] = bucket.rate_per_s
        self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < self.SWEEP_EVERY:
            return
        self._since_sweep = 0
        # A bucket drained to empty is the same as a new one: drop it so idle users cost nothing.
        self._levels = {k: v for k, v in self._levels.items() if v.level - (now - v.at) * self._rates[k] > 0}
        self._rates = {k: self._rates[k] for k in self._levels}
        self._notices = {k: until for k, until in self._notices.items() if until > now}

    async def first_notice(self, key: str, seconds: float) -> bool:
        now = time.monotonic()
        if self._notices.get(key, 0.0) > now:
            return False
        self._notices[key] = now + seconds
        return True

    async def close(self) -> None:
        self._levels.clear()


# KEYS: bucket keys. ARGV: amount, mode (0 take, 1 peek, 2 force), then size1, rate1, size2, rate2, ...
# (rate per second). Each bucket is a hash {level, at}; the clock is the server's, so every process
# agrees. Returns {1} when taken (or, peeking, when it would be), or
# {0, retry_after_seconds, index of the fullest, what it would take now} (numbers as strings).
_LEAKY_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local amount = tonumber(ARGV[1])
local mode = tonumber(ARGV[2])
local levels = {}
local worst, blocker, left = 0, 0, 0
for i = 1, #KEYS do
  local size = tonumber(ARGV[2 * i + 1])
  local rate = tonumber(ARGV[2 * i + 2])
  local v = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = tonumber(v[1]) or 0
  local at = tonumber(v[2]) or now
  level = math.max(0, level - math.max(0, now - at) * rate)
  levels[i] = level
  local over = level + amount - size
  if over > 1e-9 and (blocker == 0 or over / rate > worst) then
    worst, blocker, left = over / rate, i, math.max(0, size - level)
  end
end
if mode ~= 2 and blocker > 0 then
  return {0, tostring(worst), blocker, tostring(left)}
end
if mode == 1 then
  return {1}
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i + 2])
  local level = levels[i] + amount
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

    async def acquire(self, buckets: Sequence[Bucket], amount: float = 1.0, mode: Mode = "take") -> Refusal | None:
        args: list[float] = [amount, _MODES[mode]]
        for b in buckets:
            args += [b.size, b.rate_per_s]
        try:
            result = await self._script(keys=[self._prefix + b.key for b in buckets], args=args)
        except Exception as exc:  # noqa: BLE001 - Redis down must not take the bot down with it
            self._log_outage(exc)
            return None  # fail open: serving without limits beats refusing everyone
        if int(result[0]) == 1:
            return None
        return Refusal(buckets[int(result[2]) - 1], float(result[1]), float(result[3]))

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
    from engine.config import ConfigError

    url = os.environ.get(env_name, "")
    if not url:
        raise ConfigError(f"{what}: backend is redis but the environment variable {env_name} is not set")
    return url
