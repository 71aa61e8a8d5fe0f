"""Feedback on answers, written once for every platform.

A finished answer is put on record (engine.feedback) under a short random id, and the platform
puts that id on its 👍 / 👎 buttons (Slack's feedback buttons, Discord's button view). A press
comes back as (answer id, presser, positive?): it is counted once per person and answer, and
the presser alone is thanked; after a 👎 they are offered a short "what was wrong?" form.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.feedback import AnswerRecord
from engine.types import AnswerDone, ChatRequest, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

_ANSWER_ID = re.compile(r"^[0-9a-f]{16}$")
THANKS_UP = "Thanks for the feedback! Glad that helped."
THANKS_DOWN = "Thanks for the feedback. Sorry that answer missed: tell us what was wrong?"
THANKS_AGAIN = "Your feedback on that answer is already recorded. Thanks!"
UNKNOWN = "That answer is too old to rate, or not one of mine."
COMMENT_THANKS = "Thanks, that helps us improve the answers."


@dataclass(frozen=True)
class FeedbackTag:
    """What a platform puts on an answer's buttons: the id the answer is on record under."""

    answer_id: str


@dataclass(frozen=True)
class PressOutcome:
    text: str  # the thank-you, shown to the presser alone
    counted: bool
    offer_comment: bool  # a 👎: offer the "what was wrong?" form


def answer_id_of(value: str) -> str | None:
    """The answer id in a button's value ("up:<id>" / "down:<id>", or the id alone), if well formed."""
    candidate = value.rsplit(":", 1)[-1]
    return candidate if _ANSWER_ID.match(candidate) else None


async def register_answer(engine: Engine, request: ChatRequest, done: AnswerDone) -> FeedbackTag | None:
    """Put a finished answer on record; None when there is nothing to rate (or no feedback store)."""
    if engine.feedback is None or not done.text.strip() or done.finish_reason == "cancelled":
        return None
    where = request.where
    record = AnswerRecord(answer_id=secrets.token_hex(8), platform=where.platform, workspace=where.workspace,
                          channel=where.channel, model=done.model, documents=bool(done.sources),
                          latency_s=round(done.latency_s, 3), at=time.time(), asker=request.user.id)
    try:
        await engine.feedback.register(record)
    except Exception:  # noqa: BLE001 - the answer stands without buttons
        log.warning("could not put the answer on record for feedback", extra={"session": where.session_key},
                    exc_info=True)
        return None
    return FeedbackTag(record.answer_id)


async def record_press(engine: Engine, answer_id: str | None, user: User, positive: bool) -> PressOutcome:
    """Count a 👍 / 👎 press once per person and answer; what to tell the presser."""
    if engine.feedback is None or answer_id is None:
        return PressOutcome(UNKNOWN, False, False)
    result = await engine.feedback.vote(answer_id, user.id, positive)
    if not result.known:
        return PressOutcome(UNKNOWN, False, False)
    if not result.counted:
        return PressOutcome(THANKS_AGAIN, False, False)
    return PressOutcome(THANKS_UP if positive else THANKS_DOWN, True, not positive)


async def record_comment(engine: Engine, answer_id: str | None, user: User, text: str) -> bool:
    """Keep what was wrong with an answer, as its 👎 presser wrote it."""
    if engine.feedback is None or answer_id is None or not text.strip():
        return False
    return await engine.feedback.comment(answer_id, user.id, text)
