"""Admission: whether the engine takes new work now, and failures counted once.

Before any work the engine asks `admit`: memory must not be short (the memory monitor) and the
asker must be within the rate limits (whom they spare is limits.exempt, judged by
engine/authority.py, which says who is who). An adapter asks the same earlier, through
`precheck`, before it spends anything on a request (the asker's profile, a thread's history, a
download): the unit is taken then, and remembered as a ticket that the engine's own `admit`
uses instead of taking another, so a request is charged once. `failure` counts and logs a
refusal or fault once, with the reference the user sees.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from engine.authority import Authority
from engine.config import Config, LimitsConfig
from engine.errors import ErrorCode, ParleyError
from engine.limits import RateLimiter
from engine.monitor import MemoryMonitor
from engine.shared_stats import StatsSync, open_stats_sync
from engine.stats import EngineStats
from engine.types import AnswerFailed, ChatRequest, Conversation, FileUpload, User

log = logging.getLogger(__name__)

# Failures that are faults (logged as errors); the others are refusals (warnings).
FAULTS = frozenset({ErrorCode.GENERATION_FAILED, ErrorCode.MODEL_FAULT, ErrorCode.INTERNAL,
                    ErrorCode.MODEL_LOAD_FAILED})


Resolve = Callable[[], Awaitable[User]]  # the asker as the platform describes them (a profile lookup)
T = TypeVar("T")


def _ticket(where: Conversation, user: User, action: str) -> str:
    return f"{where.platform}/{where.workspace}/{user.id}/{action}"


class Tickets:
    """Units `precheck` took, by whom and for what, until `admit` uses them: a request is charged
    once whichever way it comes. Unused ones lapse (the request died on the way: its unit stays spent)."""

    TTL_S = 600.0  # longer than a download or a thread's history takes
    MOST = 10_000  # tickets held before the lapsed ones are swept

    def __init__(self) -> None:
        self._held: dict[str, deque[float]] = {}  # key -> expiry times, oldest first
        self._count = 0

    def add(self, key: str) -> None:
        now = time.monotonic()
        if self._count >= self.MOST:
            self._sweep(now)
        self._held.setdefault(key, deque()).append(now + self.TTL_S)
        self._count += 1

    def use(self, key: str) -> bool:
        held = self._held.get(key)
        now = time.monotonic()
        while held:
            self._count -= 1
            if held.popleft() > now:
                if not held:
                    del self._held[key]
                return True
        self._held.pop(key, None)
        return False

    def _sweep(self, now: float) -> None:
        for key in list(self._held):
            live = deque(t for t in self._held[key] if t > now)
            self._count -= len(self._held[key]) - len(live)
            if live:
                self._held[key] = live
            else:
                del self._held[key]


class Admission:
    """Memory and rate-limit admission, and failure accounting, for every engine command."""

    def __init__(self, authority: Authority, limits: LimitsConfig, stats: EngineStats):
        self._authority = authority
        self._limits = limits
        self._stats = stats
        self.limiter: RateLimiter | None = None  # from start()
        self.monitor: MemoryMonitor | None = None  # from watch()
        self._tickets = Tickets()  # units precheck took, until admit comes for them
        self.stats_sync: StatsSync | None = None  # from start(), with redis

    def start(self, config: Config | None = None) -> None:
        """Start counting rates (in memory, or in Redis shared with other processes), and with
        `sessions.backend: redis` summing the stats there (engine/shared_stats.py)."""
        self.limiter = RateLimiter.from_config(self._limits)
        self.stats_sync = open_stats_sync(config, self._stats) if config is not None else None
        if self.stats_sync is not None:
            self.stats_sync.start()

    def watch(self, monitor: MemoryMonitor) -> None:
        """Refuse new work while `monitor` says memory is short."""
        self.monitor = monitor

    async def close(self) -> None:
        if self.limiter is not None:
            await self.limiter.close()
        if self.stats_sync is not None:
            await self.stats_sync.close()

    # ---- whether now -------------------------------------------------------------------------

    async def admit(self, where: Conversation, user: User, action: str, resolve: Resolve | None = None) -> User:
        """Before any work: refuse it while memory is short (OVERLOADED) or past a rate limit
        (`action`: answer, ingest, or summary: one question's unit, and a summary call left).
        A unit `precheck` took for the same asker and action is used instead of a new one.
        Returns the user judged (`resolve`d when that decided it: see `precheck`)."""
        if self.monitor is not None:
            self.monitor.admit()
        if self.limiter is None or self._authority.exempt(where, user):
            return user
        if self._tickets.use(_ticket(where, user, action)):
            return user
        return await self._charge(where, user, action, resolve)

    async def precheck(self, where: Conversation, user: User, action: str, resolve: Resolve | None = None) -> User:
        """`admit`, early: before an adapter spends anything on the request. `user` may be the
        bare id the event carried; `resolve` (the platform's profile lookup) is asked only when a
        limit refuses and the profile could spare them (limits.exempt: admins)."""
        if self.monitor is not None:
            self.monitor.admit()
        if self.limiter is None or self._authority.exempt(where, user):
            return user
        judged = await self._charge(where, user, action, resolve)
        if not self._authority.exempt(where, judged):
            self._tickets.add(_ticket(where, user, action))  # the engine's admit finds it: no second charge
        return judged

    async def charge_summary(self, where: Conversation, user: User, calls: int, *, force: bool = False) -> None:
        """Take a summary's model calls from its buckets (engine/limits.py); the exempt pay nothing."""
        if self.limiter is not None and calls > 0 and not self._authority.exempt(where, user):
            await self.limiter.charge_summary(where, user, calls, force=force)

    async def _charge(self, where: Conversation, user: User, action: str, resolve: Resolve | None) -> User:
        try:
            if action == "ingest":
                await self.limiter.check_ingest(where, user)
            elif action == "summary":
                await self.limiter.check_summary(where, user)  # a call left (peeked), then the question's unit
                await self.limiter.check_answer(where, user)
            else:
                await self.limiter.check_answer(where, user)
        except ParleyError as exc:
            if exc.code is not ErrorCode.RATE_LIMITED or resolve is None or user.platform_admin:
                raise
            # Only the platform says who administers a workspace: asked now, when it could matter.
            if not self._authority.exempt(where, dataclasses.replace(user, platform_admin=True)):
                raise
            full = await resolve()
            if not self._authority.exempt(where, full):
                raise
            return full
        return user

    async def admitted(self, where: Conversation, user: User, start: Callable[[], Awaitable[T]], *,
                       action: str = "answer", args: tuple = ()) -> T | AnswerFailed:
        """`admit` a question's unit, then `start()` its work (planning, submitting); a failure of
        either is counted and logged once (`failure`: `action`, `args`) and comes back as the
        AnswerFailed to yield, with its reference."""
        try:
            await self.admit(where, user, "answer")
            return await start()
        except ParleyError as exc:
            return self.failure(exc, action=action, args=args)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply with a reference
            return self.failure(ParleyError(ErrorCode.INTERNAL), cause=exc, action=action, args=args)

    # ---- failures ----------------------------------------------------------------------------

    def failure(self, exc: ParleyError, request: ChatRequest | None = None,
                cause: BaseException | None = None, *, action: str = "answer", args: tuple = ()) -> AnswerFailed:
        """Count and log a failure once, with the reference the user sees."""
        if exc.code is ErrorCode.RATE_LIMITED:
            self._stats.record_rate_limited(getattr(exc, "limit", "user"))
        else:
            self._stats.record_error(exc.code.value)
        extra = _log_fields(exc, action, (request, *args))
        if cause is not None:
            log.error("request failed: %s", exc.user_message, extra=extra, exc_info=cause)
        elif exc.silent:
            log.debug("request refused again in its cool-down", extra=extra)  # a flood: one line is enough
        elif exc.code in FAULTS:
            log.error("request failed: %s", exc.user_message, extra=extra)
        else:
            log.warning("request refused: %s", exc.user_message, extra=extra)
        return AnswerFailed(code=exc.code, message=exc.user_message, reference=exc.reference, silent=exc.silent)


def _log_fields(exc: ParleyError, action: str, args: tuple) -> dict:
    """The failure's log fields: its code and reference, and who and where from the call's arguments."""
    extra = {"code": exc.code.value, "ref": exc.reference, "action": action}
    if exc.detail:
        extra["detail"] = exc.detail
    for arg in args:
        if isinstance(arg, (ChatRequest, FileUpload)):
            extra.update(session=arg.where.session_key, user=arg.user.id)
        elif isinstance(arg, Conversation):
            extra["session"] = arg.session_key
        elif isinstance(arg, User):
            extra["user"] = arg.id
    return extra
