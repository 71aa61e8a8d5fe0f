"""Rate limits: leaky buckets per user, per workspace, a smaller one per user for ingests, and
for summaries, the model calls they make, per user and per workspace, by the hour.

A bucket holds up to N units (its size per period, which is also the burst) and drains at N per
period (engine/buckets.py: in memory or in Redis). A question or a file takes one unit from every
bucket it counts against, or from none: a user refused by the workspace bucket keeps their own
allowance. A summary is charged by its model calls: before anything is read its buckets must
hold one more call; once its messages are packed, the calls of its first round are taken at once
(or the summary is refused before any model call); the rounds that combine the parts are charged
as they go, past the size if need be (work begun is finished, and the next summary waits longer).

Over the limit, the user hears once when to retry; later refusals in that cool-down are silent
(ParleyError.silent), so a flood gets one reply, not two hundred.
"""
from __future__ import annotations

import logging
import math

from engine.buckets import Bucket, BucketStore, MemoryBuckets, Mode, RedisBuckets, Refusal, redis_url
from engine.config import LimitsConfig
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User

__all__ = ["Bucket", "BucketStore", "MemoryBuckets", "RateLimiter", "RedisBuckets", "Refusal", "redis_url"]

log = logging.getLogger(__name__)

HOUR_S = 3600.0
FEWER = "ask for fewer messages (`limit 200`) or a shorter window"


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


def _per(bucket: Bucket) -> str:
    return f"{bucket.size:g} a minute" if bucket.period_s == 60.0 else f"{bucket.size:g} an hour"


class RateLimiter:
    """Admission by rate: `check_answer` before a generation, `check_ingest` before a file,
    `check_summary` before a summary reads anything, `charge_summary` for its model calls."""

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

    def _summary_buckets(self, where: Conversation, user: User) -> list[Bucket]:
        scope = self._scope(where)
        buckets = [Bucket(f"{scope}:summary:{user.id}", self.config.summary_calls_per_hour, "summary", HOUR_S)]
        if where.workspace != "dm":
            buckets.append(Bucket(f"{scope}:summary_workspace", self.config.workspace_summary_calls_per_hour,
                                  "summary_workspace", HOUR_S))
        return buckets

    async def check_summary(self, where: Conversation, user: User) -> None:
        """Before a summary reads anything: its buckets hold at least one more model call (taken
        later, by `charge_summary`)."""
        await self._check("summary", where, user, self._summary_buckets(where, user), mode="peek")

    async def charge_summary(self, where: Conversation, user: User, calls: int, *, force: bool = False) -> None:
        """Take `calls` model calls from the summary buckets, all or none (RATE_LIMITED saying how
        many it needed); `force`: take them whatever is left (a summary finishing what it began)."""
        buckets = self._summary_buckets(where, user)
        refusal = await self.store.acquire(buckets, calls, "force" if force else "take")
        if refusal is None:
            return
        bucket = refusal.bucket
        whose = "this workspace's summaries" if bucket.kind == "summary_workspace" else "your summaries"
        if calls > bucket.size:
            text = (f"Summarising this needs {calls} model calls, more than {whose} may use ({_per(bucket)}): "
                    f"{FEWER}.")
        else:
            text = (f"Summarising this needs {calls} model calls and {whose} have {math.floor(refusal.left)} left "
                    f"({_per(bucket)}). Try again in {_wait_text(refusal.retry_after)}, or {FEWER}.")
        error = ParleyError(ErrorCode.RATE_LIMITED, text)  # about this summary: always said
        error.limit = bucket.kind
        raise error

    async def _check(self, action: str, where: Conversation, user: User, buckets: list[Bucket],
                     mode: Mode = "take") -> None:
        refusal = await self.store.acquire(buckets, 1.0, mode)
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
        size = _per(refusal.bucket)
        kind = refusal.bucket.kind
        if kind == "workspace":
            return (f"This workspace is asking more than I can take ({size}). Try again in {wait}; "
                    "I'll ignore messages until then.")
        if kind == "ingest":
            return f"You're sharing files faster than I can read them ({size}). Try again in {wait}."
        if kind == "summary":
            return f"Your summaries have used their model calls for now ({size}). Try again in {wait}."
        if kind == "summary_workspace":
            return f"This workspace's summaries have used their model calls for now ({size}). Try again in {wait}."
        return f"You're sending messages too fast ({size}). Try again in {wait}; I'll ignore messages until then."

    async def close(self) -> None:
        await self.store.close()
