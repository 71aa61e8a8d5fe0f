"""Feedback on answers: 👍 / 👎 per person per answer, counted per model over the last day and week.

Platform-free: an adapter registers each finished answer under an id it puts on its buttons
(`AnswerRecord`: model, where, whether documents were used, latency), and a press names that id
and the presser. One person has one vote per answer: pressing the same button again (or Slack
redelivering the same press) changes nothing; pressing the other one replaces the vote. Kept where
the other state is (data_dir/feedback.sqlite, or Redis with `sessions.backend: redis`) for
RETAIN_DAYS; the totals behind the Prometheus counters only ever grow. The counts of the last day
and week come from a tally kept as votes change (engine/vote_tally.py), not from reading every vote.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from engine.redis_state import KEEP, update_value
from engine.vote_tally import MemoryTally, TalliedVote, VoteTally

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

RETAIN_DAYS = 30  # answers and votes older than this are forgotten (a press on them is not counted)
DAY_S = 86400.0
MAX_COMMENT = 1000


@dataclass(frozen=True)
class AnswerRecord:
    """A finished answer that can be rated."""

    answer_id: str
    platform: str
    workspace: str
    channel: str
    model: str
    documents: bool  # the answer used retrieved passages
    latency_s: float
    at: float
    asker: str = ""


@dataclass(frozen=True)
class VoteResult:
    known: bool  # the answer is on record (an unknown or expired one is not counted)
    counted: bool  # the vote changed something: False for a repeat or a replayed press
    positive: bool
    model: str = ""


@dataclass(frozen=True)
class FeedbackComment:
    """What a 👎 presser said was wrong, with the answer it was about (read with /llm-audit feedback)."""

    at: float
    platform: str
    workspace: str
    channel: str
    model: str
    user_id: str
    comment: str
    answer_id: str


@dataclass(frozen=True)
class FeedbackCounts:
    """One model's votes over the last day and the last week."""

    model: str
    day_up: int = 0
    day_down: int = 0
    week_up: int = 0
    week_down: int = 0

    @staticmethod
    def share(up: int, down: int) -> float | None:
        return up / (up + down) if up + down else None


class FeedbackStore:
    """Answers, votes and running totals in three mappings (SqliteDict tables or Redis keys), and
    the tally the counts come from (in memory unless given: filled from the stored votes here).
    Blocking: FeedbackBook calls it from a worker thread."""

    def __init__(self, answers: MutableMapping, votes: MutableMapping, totals: MutableMapping,
                 tally: VoteTally | None = None):
        self._answers = answers
        self._votes = votes
        self._totals = totals
        self._tally = tally if tally is not None else MemoryTally()
        self._tally_lock = threading.Lock()  # a MemoryTally is one process's, changed from worker threads
        self._tally.load(self._stored_votes, self._stored_totals)

    def _stored_votes(self) -> list[TalliedVote]:
        """Every stored vote as the tally counts it (an old vote's workspace is its answer's)."""
        out = []
        for key, vote in list(self._votes.items()):
            scope = vote.get("scope")
            if scope is None:
                record = self.answer(key.rsplit("|", 1)[0])
                scope = f"{record.platform}/{record.workspace}" if record else ""
            out.append(TalliedVote(key, scope, vote["model"], bool(vote["positive"]), float(vote["at"])))
        return out

    def _stored_totals(self) -> list[tuple[tuple[str, str], int]]:
        out = []
        for key, n in list(self._totals.items()):
            model, rating = key.rsplit("|", 1)
            out.append(((model, rating), int(n)))
        return out

    def register(self, record: AnswerRecord) -> None:
        self._answers[record.answer_id] = asdict(record)

    def answer(self, answer_id: str) -> AnswerRecord | None:
        data = self._answers.get(answer_id)
        return AnswerRecord(**data) if data else None

    def vote(self, answer_id: str, user: str, positive: bool, at: float) -> VoteResult:
        record = self.answer(answer_id)
        if record is None or at - record.at > RETAIN_DAYS * DAY_S:
            return VoteResult(False, False, positive)
        key = f"{answer_id}|{user}"
        scope = f"{record.platform}/{record.workspace}"

        def cast(earlier: dict | None):
            if earlier is not None and earlier["positive"] == positive:
                return KEEP  # the same press again
            return {"positive": positive, "at": at, "model": record.model, "scope": scope,
                    "comment": earlier.get("comment", "") if earlier else ""}

        earlier, now = update_value(self._votes, key, cast)  # a compare-and-set in Redis
        if now is earlier:
            return VoteResult(True, False, positive, record.model)
        with self._tally_lock:
            if earlier is not None:
                self._tally.remove(TalliedVote(key, earlier.get("scope", scope), earlier["model"],
                                               bool(earlier["positive"]), float(earlier["at"])))
            self._tally.add(TalliedVote(key, scope, record.model, positive, at))
        total = f"{record.model}|{'up' if positive else 'down'}"
        update_value(self._totals, total, lambda n: int(n or 0) + 1)
        return VoteResult(True, True, positive, record.model)

    def comment(self, answer_id: str, user: str, text: str) -> bool:
        """Keep what a 👎 presser said was wrong (their vote must be on record)."""
        said = text.strip()[:MAX_COMMENT]
        before, _ = update_value(self._votes, f"{answer_id}|{user}",
                                 lambda vote: KEEP if vote is None else {**vote, "comment": said})
        return before is not None

    def counts(self, now: float, platform: str | None = None, workspace: str | None = None) -> list[FeedbackCounts]:
        """Votes per model over the last day and week: on every answer, or on one workspace's
        (from the tally: no vote is read). Models without a vote in the week are left out."""
        scope = None if platform is None else f"{platform}/{workspace}"
        by_model = self._tally.counts(now - DAY_S, now - 7 * DAY_S, scope)
        return [FeedbackCounts(model, *n) for model, n in sorted(by_model.items()) if any(n)]

    def comments(self, limit: int, platform: str | None = None, workspace: str | None = None) -> list[FeedbackComment]:
        """The newest `limit` comments, newest first: on every answer, or on one workspace's."""
        found = []
        for key, vote in list(self._votes.items()):
            if not vote.get("comment"):
                continue
            answer_id, _, user = key.rpartition("|")
            record = self.answer(answer_id)
            if record is None or (platform is not None and (record.platform, record.workspace) != (platform, workspace)):
                continue
            found.append(FeedbackComment(at=float(vote["at"]), platform=record.platform, workspace=record.workspace,
                                         channel=record.channel, model=record.model, user_id=user,
                                         comment=vote["comment"], answer_id=answer_id))
        return sorted(found, key=lambda c: c.at, reverse=True)[:limit]

    def totals(self) -> dict[tuple[str, str], int]:
        """(model, "up" | "down") -> votes counted since the start of records (for Prometheus; from
        the tally, which the stored totals filled)."""
        return self._tally.totals()

    def prune(self, now: float) -> int:
        horizon = now - RETAIN_DAYS * DAY_S
        stale = [k for k, v in list(self._answers.items()) if float(v["at"]) < horizon]
        for key in stale:
            del self._answers[key]
        old_votes = [k for k, v in list(self._votes.items()) if float(v["at"]) < horizon]
        for key in old_votes:
            del self._votes[key]
        self._tally.prune(horizon)
        return len(stale) + len(old_votes)

    def close(self) -> None:
        for mapping in (self._answers, self._votes, self._totals, self._tally):
            close = getattr(mapping, "close", None)
            if close is not None:
                close()


class FeedbackBook:
    """The engine's feedback, for the event loop: every store call runs in a worker thread."""

    def __init__(self, store: FeedbackStore):
        self.store = store

    async def register(self, record: AnswerRecord) -> None:
        await asyncio.to_thread(self.store.register, record)

    async def vote(self, answer_id: str, user: str, positive: bool) -> VoteResult:
        result = await asyncio.to_thread(self.store.vote, answer_id, user, positive, time.time())
        log.info("feedback", extra={"answer": answer_id, "user": user, "positive": positive,
                                    "counted": result.counted, "known": result.known, "model": result.model})
        return result

    async def comment(self, answer_id: str, user: str, text: str) -> bool:
        return await asyncio.to_thread(self.store.comment, answer_id, user, text)

    async def counts(self, platform: str | None = None, workspace: str | None = None) -> list[FeedbackCounts]:
        return await asyncio.to_thread(self.store.counts, time.time(), platform, workspace)

    async def comments(self, limit: int, platform: str | None = None,
                       workspace: str | None = None) -> list[FeedbackComment]:
        return await asyncio.to_thread(self.store.comments, limit, platform, workspace)

    async def totals(self) -> dict[tuple[str, str], int]:
        return await asyncio.to_thread(self.store.totals)

    async def close(self) -> None:
        await asyncio.to_thread(self.store.close)


def open_feedback(config: Config) -> FeedbackBook:
    """Where config.sessions.backend keeps state (blocking: call it in a worker thread)."""
    from engine.redis_state import open_state_mapping, open_state_tally

    ttl = RETAIN_DAYS * DAY_S  # Redis forgets old answers and votes by itself; SQLite is pruned below
    store = FeedbackStore(open_state_mapping(config, "feedback.sqlite", "answers", "feedback:answer:", ttl),
                          open_state_mapping(config, "feedback.sqlite", "votes", "feedback:vote:", ttl),
                          open_state_mapping(config, "feedback.sqlite", "totals", "feedback:total:"),
                          open_state_tally(config, "feedback:tally:", ttl))
    if config.sessions.backend != "redis":
        pruned = store.prune(time.time())
        if pruned:
            log.info("feedback pruned", extra={"records": pruned})
    return FeedbackBook(store)
