"""The edit budget of one workspace shared by every replica: one leaky bucket in Redis.

Platforms limit message edits per app and workspace (Slack: about 50 chat.update a minute), not
per process, so N replicas each keeping their own bucket would edit N times too often. With
`sessions.backend: redis` every replica takes from one bucket per workspace (engine/buckets.py's
Lua bucket, under `sessions.redis_state_prefix` + "edits:"); when Redis does not answer it fails
open (an interim edit goes), as the rate limits do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.buckets import Bucket, BucketStore, RedisBuckets

if TYPE_CHECKING:
    from engine.config import Config


class SharedEditBudget:
    """EditBudget's interface over a shared bucket: `burst` edits at once, `rate_per_s` after."""

    def __init__(self, store: BucketStore, workspace: str, rate_per_s: float, burst: int):
        self._store = store
        self._bucket = Bucket(workspace, float(burst), "edits", burst / rate_per_s)

    async def try_take(self) -> bool:
        """One interim edit, if the bucket has one."""
        return await self._store.acquire([self._bucket], 1.0, "take") is None

    async def take(self) -> None:
        """A final edit: it always goes, and only drains the bucket."""
        await self._store.acquire([self._bucket], 1.0, "force")


def open_edit_buckets(config: Config) -> BucketStore | None:
    """With `sessions.backend: redis`, where the shared edit buckets live; None otherwise."""
    sessions = config.sessions
    if sessions.backend != "redis":
        return None
    from engine.limits import redis_url

    return RedisBuckets.from_url(redis_url(sessions.redis_url_env, "sessions"), sessions.redis_state_prefix + "edits:")
