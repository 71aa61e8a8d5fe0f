"""`/llm-docs cancel NAME` from any replica: the running ingests and the cancel requests in Redis.

A replica running an ingest keeps a key naming it (its sharer, refreshed every POLL_S, gone
when the ingest ends or a little after its process dies) and looks every POLL_S for a cancel
request at the key beside it. A replica asked to cancel an ingest it does not run finds that key,
lets the authority judge the sharer it names, and leaves the request: the running replica stops
the ingest within about a second, as if cancelled there. Keys under `sessions.redis_state_prefix`;
values are JSON, signed with the state HMAC key when one is set (a forged request is refused).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from engine.config import Config
from engine.state_codec import Refused, StateCodec, refused
from engine.types import Conversation

log = logging.getLogger(__name__)

POLL_S = 1.0
RUNNING_TTL_S = 15  # a running ingest's key outlives a dead process this long
REQUEST_TTL_S = 60


class SharedCancels:
    def __init__(self, client, prefix: str, codec: StateCodec | None = None):
        self._client = client  # redis.Redis (blocking: called in worker threads)
        self._prefix = prefix
        self._codec = codec or StateCodec()  # JSON, signed with the state key if one is set

    def _read(self, key: str, raw: bytes | None, field: str) -> str | None:
        if raw is None:
            return None
        try:
            return str(self._codec.decode(key, raw)[field])
        except (Refused, KeyError, TypeError) as exc:
            refused(key, exc)
            return None

    def _key(self, where: Conversation, name: str) -> str:
        return f"{self._prefix}ingest:{where.platform}/{where.workspace}/{where.documents_at}/{name}"

    @contextlib.asynccontextmanager
    async def running(self, where: Conversation, name: str, uploader: str,
                      cancel: Callable[[str], None]) -> AsyncIterator[None]:
        """While the block runs: the ingest of `name` is listed, and a request from any replica
        calls `cancel(by)` (`name` as clean_filename makes it)."""
        watch = asyncio.create_task(self._watch(self._key(where, name), uploader, cancel))
        try:
            yield
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            key = self._key(where, name)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._client.delete, key, key + "#cancel")

    async def _watch(self, key: str, uploader: str, cancel: Callable[[str], None]) -> None:
        unreachable = False
        while True:
            try:
                asked = await asyncio.to_thread(self._beat, key, uploader)
            except Exception as exc:  # noqa: BLE001 - redis away: try again next time; said once
                if not unreachable:
                    log.warning("could not check for a shared ingest cancel", extra={"key": key, "why": str(exc)})
                unreachable = True
                await asyncio.sleep(POLL_S)
                continue
            unreachable = False
            by = self._read(key + "#cancel", asked, "by")
            if by is not None:
                cancel(by)
                return
            await asyncio.sleep(POLL_S)

    def _beat(self, key: str, uploader: str) -> bytes | None:
        """Refresh the running key; the cancel request, if any."""
        pipe = self._client.pipeline(transaction=False)
        pipe.set(key, self._codec.encode(key, {"uploader": uploader}), ex=RUNNING_TTL_S)
        pipe.get(key + "#cancel")
        return pipe.execute()[1]

    async def uploader(self, where: Conversation, name: str) -> str | None:
        """Who shared the ingest of `name` running on some replica; None when none runs."""
        key = self._key(where, name)
        return self._read(key, await asyncio.to_thread(self._client.get, key), "uploader")

    async def request(self, where: Conversation, name: str, by: str) -> None:
        key = self._key(where, name) + "#cancel"
        await asyncio.to_thread(self._client.set, key, self._codec.encode(key, {"by": by}), ex=REQUEST_TTL_S)


def shared_cancels(config: Config) -> SharedCancels | None:
    """With `sessions.backend: redis` (and documents on), the shared cancels; None otherwise."""
    sessions = config.sessions
    if sessions.backend != "redis" or not config.knowledge.enabled:
        return None
    import redis

    from engine.limits import redis_url
    from engine.redis_state import state_codec

    client = redis.Redis.from_url(redis_url(sessions.redis_url_env, "sessions"), socket_timeout=5,
                                  socket_connect_timeout=5)  # connects on first use: opening blocks nothing
    return SharedCancels(client, sessions.redis_state_prefix, state_codec(config))
