"""Admission: whether the engine takes new work now, and failures counted once.

Before any work the engine asks `admit`: memory must not be short (the memory monitor) and the
asker must be within the rate limits (whom they spare is limits.exempt, judged by
engine/authority.py, which says who is who). `failure` counts and logs a refusal or fault once,
with the reference the user sees.
"""
from __future__ import annotations

import logging

from engine.authority import Authority
from engine.config import LimitsConfig
from engine.errors import ErrorCode, ParleyError
from engine.limits import RateLimiter
from engine.monitor import MemoryMonitor
from engine.stats import EngineStats
from engine.types import AnswerFailed, ChatRequest, Conversation, FileUpload, User

log = logging.getLogger(__name__)

# Failures that are faults (logged as errors); the others are refusals (warnings).
FAULTS = frozenset({ErrorCode.GENERATION_FAILED, ErrorCode.MODEL_FAULT, ErrorCode.INTERNAL,
                    ErrorCode.MODEL_LOAD_FAILED})


class Admission:
    """Memory and rate-limit admission, and failure accounting, for every engine command."""

    def __init__(self, authority: Authority, limits: LimitsConfig, stats: EngineStats):
        self._authority = authority
        self._limits = limits
        self._stats = stats
        self.limiter: RateLimiter | None = None  # from start()
        self.monitor: MemoryMonitor | None = None  # from watch()

    def start(self) -> None:
        """Start counting rates (in memory, or in Redis shared with other processes)."""
        self.limiter = RateLimiter.from_config(self._limits)

    def watch(self, monitor: MemoryMonitor) -> None:
        """Refuse new work while `monitor` says memory is short."""
        self.monitor = monitor

    async def close(self) -> None:
        if self.limiter is not None:
            await self.limiter.close()

    # ---- whether now -------------------------------------------------------------------------

    async def admit(self, where: Conversation, user: User, action: str) -> None:
        """Before any work: refuse it while memory is short (OVERLOADED) or past a rate limit."""
        if self.monitor is not None:
            self.monitor.admit()
        if self.limiter is None or self._authority.exempt(where, user):
            return
        if action == "ingest":
            await self.limiter.check_ingest(where, user)
        else:
            await self.limiter.check_answer(where, user)

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
