"""👍 / 👎 counts kept as votes change, so /llm-stats and /metrics count without reading every vote.

A tally holds, per workspace ("platform/workspace"), model and rating, when each counted vote was
cast: counting the last day or week is then a search, not a pass over the votes. It also keeps
the running totals behind the Prometheus counters. MemoryTally (one process, the SQLite store) is
filled from the stored votes and totals when the store opens; RedisTally keeps sorted sets and a
hash next to the votes in Redis (shared by every bot process, a total bumped atomically), filled
from the stored ones by the first process to open it.
"""
from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

Counts = tuple[int, int, int, int]  # up, down since the short window's start; up, down since the long one's


@dataclass(frozen=True)
class TalliedVote:
    key: str  # "answer id|user"
    scope: str  # "platform/workspace" of the answer
    model: str
    positive: bool
    at: float


StoredVotes = Callable[[], Iterable[TalliedVote]]  # the votes already stored, read only if needed
StoredTotals = Callable[[], Iterable[tuple[tuple[str, str], int]]]  # ((model, "up" | "down"), votes)


class VoteTally(Protocol):
    def load(self, votes: StoredVotes, totals: StoredTotals) -> None:
        """Take in the votes and totals already stored (only if this tally does not hold them yet)."""

    def add(self, vote: TalliedVote) -> None:
        """Count a vote (replacing the same key's earlier one) and bump its model's total."""

    def totals(self) -> dict[tuple[str, str], int]:
        """(model, "up" | "down") -> votes counted since the start of records."""

    def remove(self, vote: TalliedVote) -> None: ...

    def counts(self, since_short: float, since_long: float, scope: str | None = None) -> dict[str, Counts]:
        """Per model, the votes cast at or after each of the two times: in every workspace, or in `scope`."""

    def prune(self, before: float) -> None: ...

    def close(self) -> None: ...


class MemoryTally:
    """The tally in this process: per (scope, model, rating) the sorted times of its votes."""

    def __init__(self):
        self._times: dict[tuple[str, str, bool], list[float]] = {}
        self._votes: dict[str, TalliedVote] = {}
        self._totals: dict[tuple[str, str], int] = {}

    def load(self, votes: StoredVotes, totals: StoredTotals) -> None:
        for vote in votes():
            self._place(vote)
        self._totals = dict(totals())

    def add(self, vote: TalliedVote) -> None:
        self._place(vote)
        total = (vote.model, "up" if vote.positive else "down")
        self._totals[total] = self._totals.get(total, 0) + 1

    def _place(self, vote: TalliedVote) -> None:
        if vote.key in self._votes:
            self.remove(self._votes[vote.key])
        self._votes[vote.key] = vote
        bisect.insort(self._times.setdefault((vote.scope, vote.model, vote.positive), []), vote.at)

    def totals(self) -> dict[tuple[str, str], int]:
        return dict(self._totals)

    def remove(self, vote: TalliedVote) -> None:
        known = self._votes.pop(vote.key, None)
        if known is None:
            return
        times = self._times.get((known.scope, known.model, known.positive), [])
        i = bisect.bisect_left(times, known.at)
        if i < len(times) and times[i] == known.at:
            del times[i]

    def counts(self, since_short: float, since_long: float, scope: str | None = None) -> dict[str, Counts]:
        out: dict[str, list[int]] = {}
        for (where, model, positive), times in self._times.items():
            if scope is not None and where != scope:
                continue
            n = out.setdefault(model, [0, 0, 0, 0])
            rating = 0 if positive else 1
            n[rating] += len(times) - bisect.bisect_left(times, since_short)
            n[2 + rating] += len(times) - bisect.bisect_left(times, since_long)
        return {model: (n[0], n[1], n[2], n[3]) for model, n in out.items()}

    def prune(self, before: float) -> None:
        for vote in [v for v in self._votes.values() if v.at < before]:
            self.remove(vote)

    def close(self) -> None:
        pass


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisTally:
    """The tally in Redis under `prefix`: a sorted set of vote keys by time per (scope, model,
    rating), and the set naming them. Votes older than `retain_s` leave as new ones come."""

    def __init__(self, client, prefix: str, retain_s: float):
        self._client = client  # redis.Redis
        self._prefix = prefix
        self._retain_s = retain_s
        self._groups = f"{prefix}groups"  # members: JSON [scope, model]
        self._totals = f"{prefix}totals"  # a hash: JSON [model, "up" | "down"] -> votes

    def _set(self, group: str, positive: bool) -> str:
        return f"{self._prefix}{'up' if positive else 'down'}:{group}"

    def load(self, votes: StoredVotes, totals: StoredTotals) -> None:
        marker = f"{self._prefix}loaded"
        if self._client.exists(marker):
            return
        loaded = 0
        for vote in votes():
            self._place(vote, self._client.pipeline(transaction=True)).execute()
            loaded += 1
        stored = {json.dumps(list(total)): n for total, n in totals()}
        if stored:
            self._client.hset(self._totals, mapping=stored)
        self._client.set(marker, "1")
        if loaded:
            log.info("feedback tally filled from the stored votes", extra={"votes": loaded})

    def add(self, vote: TalliedVote) -> None:
        pipe = self._place(vote, self._client.pipeline(transaction=True))
        pipe.hincrby(self._totals, json.dumps([vote.model, "up" if vote.positive else "down"]), 1)
        pipe.execute()

    def _place(self, vote: TalliedVote, pipe):
        group = json.dumps([vote.scope, vote.model])
        pipe.zrem(self._set(group, not vote.positive), vote.key)
        pipe.zadd(self._set(group, vote.positive), {vote.key: vote.at})
        pipe.zremrangebyscore(self._set(group, vote.positive), "-inf", f"({vote.at - self._retain_s!r}")
        pipe.sadd(self._groups, group)
        return pipe

    def totals(self) -> dict[tuple[str, str], int]:
        out = {}
        for field, n in self._client.hgetall(self._totals).items():
            model, rating = json.loads(field)
            out[(model, rating)] = int(n)
        return out

    def remove(self, vote: TalliedVote) -> None:
        self._client.zrem(self._set(json.dumps([vote.scope, vote.model]), vote.positive), vote.key)

    def counts(self, since_short: float, since_long: float, scope: str | None = None) -> dict[str, Counts]:
        groups = [_text(g) for g in self._client.smembers(self._groups)]
        groups = [g for g in groups if scope is None or json.loads(g)[0] == scope]
        pipe = self._client.pipeline(transaction=False)
        for group in groups:
            for since in (since_short, since_long):
                pipe.zcount(self._set(group, True), since, "+inf")
                pipe.zcount(self._set(group, False), since, "+inf")
        n = [int(x) for x in pipe.execute()] if groups else []
        out: dict[str, list[int]] = {}
        for i, group in enumerate(groups):
            totals = out.setdefault(json.loads(group)[1], [0, 0, 0, 0])
            for j in range(4):
                totals[j] += n[4 * i + j]
        return {model: (t[0], t[1], t[2], t[3]) for model, t in out.items()}

    def prune(self, before: float) -> None:
        for group in self._client.smembers(self._groups):
            for positive in (True, False):
                self._client.zremrangebyscore(self._set(_text(group), positive), "-inf", f"({before!r}")

    def close(self) -> None:
        self._client.close()
