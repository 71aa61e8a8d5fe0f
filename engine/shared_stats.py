"""The /llm-stats counters and each person's usage of the day, summed across replicas in Redis.

Once a second a StatsSync takes the changes this process counted (EngineStats keeps them as
deltas), adds them to Redis in one transaction (HINCRBYFLOAT), and reads back every replica's
totals, which EngineStats then shows. Keys under `sessions.redis_state_prefix`:
- `stats:totals`: a hash, counter name -> total since the first replica started;
- `stats:usage:DAY`: a hash, "q|platform/workspace/user" and "t|..." -> questions and tokens of that
  UTC day (expires two days later).
A sync that fails keeps the deltas for the next one (logged once per failure streak).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from engine.config import Config
from engine.stats import EngineStats

log = logging.getLogger(__name__)

SYNC_S = 1.0  # how often the counters are summed in Redis
USAGE_TTL_S = 2 * 86400


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class StatsSync:
    """Sums one process's counters into Redis and hands back everyone's (see the module's docstring)."""

    def __init__(self, stats: EngineStats, client, prefix: str):
        self._stats = stats
        self._client = client  # redis.Redis
        self._totals = f"{prefix}stats:totals"
        self._usage = f"{prefix}stats:usage:"
        self._task: asyncio.Task | None = None
        stats.sharing = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stats-sync")

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SYNC_S)
            failing = await self.sync(failing)

    async def sync(self, failing: bool = False) -> bool:
        """Push this process's changes and read everyone's totals; True while Redis fails."""
        deltas = self._stats.take_deltas()
        try:
            totals, usage = await asyncio.to_thread(self._exchange, deltas, time.time())
        except Exception:  # noqa: BLE001 - Redis away: keep counting here, push later
            self._stats.give_back_deltas(deltas)
            if not failing:
                log.warning("could not sum the stats in redis", exc_info=True)
            return True
        self._stats.use_shared(totals, usage)
        return False

    def _exchange(self, deltas: Counter, now: float) -> tuple[dict, dict]:
        usage_key = self._usage + _day(now)
        pipe = self._client.pipeline(transaction=True)
        for name, n in deltas.items():
            if "|" in name:
                pipe.hincrbyfloat(usage_key, name, n)
            else:
                pipe.hincrbyfloat(self._totals, name, n)
        pipe.expire(usage_key, USAGE_TTL_S)
        pipe.hgetall(self._totals)
        pipe.hgetall(usage_key)
        *_, totals, usage = pipe.execute()
        by_user: dict[str, list[int]] = {}
        for field, n in usage.items():
            kind, _, user = _text(field).partition("|")
            by_user.setdefault(user, [0, 0])[0 if kind == "q" else 1] = int(float(n))
        numbers = {_text(k): float(v) for k, v in totals.items()}
        return ({k: v if k == "generation_seconds" else int(v) for k, v in numbers.items()},
                {user: (q, t) for user, (q, t) in by_user.items()})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.sync(failing=True)  # the last changes, if Redis still answers
        await asyncio.to_thread(self._client.close)


def open_stats_sync(config: Config, stats: EngineStats) -> StatsSync | None:
    """With `sessions.backend: redis`, the sync of `stats` (opening connects nothing: no blocking)."""
    sessions = config.sessions
    if sessions.backend != "redis":
        return None
    import redis

    from engine.limits import redis_url

    client = redis.Redis.from_url(redis_url(sessions.redis_url_env, "sessions"), socket_timeout=5,
                                  socket_connect_timeout=5)  # connects in the sync's worker thread
    return StatsSync(stats, client, sessions.redis_state_prefix)
