"""What one scheduler round prefills: which waiting requests join the batch, and which one gets a
slice of its prompt computed ahead, within a prefill budget sized by time.

Every prompt token prefilled in a round stalls the running answers for that round. On a 2-core
CPU SmolLM2-135M prefills ~620 tokens/s, so a fixed 1,024-token round stalled them 1.3-1.6 s
(bench/server_peer.py's unique workload: between-token p99 1.3 s). The budget is instead the
tokens the measured prefill rate computes in a round's time (scheduler.prefill_round_ms,
ROUND_PREFILL_S by default), and a prompt longer than what is left of it is computed in slices
over several rounds (where the executor keeps a prefix cache), the answers streaming between them.

Answers go before background work (a summary's parts). Among answers the next to start is the one
with the highest response ratio, (waited + its prefill) / its prefill (highest response ratio
next): a short question is not stuck behind a long document prompt that came a moment before it,
and a long one moves up as it waits, so none starves. Its prefill counts only the tokens no
cached prefix holds: a thread's next turn costs the new message, not the whole thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.runtime.requests import ScheduledRequest

# A round's prompt tokens are what the measured rate computes in this time. With a decode step of
# 16 rows (50-90 ms on the 2-core AMD) the unique workload's between-token p99 was 422-564 ms in
# three runs (1.3 s with 1,024-token rounds); 0.2 s rounds of 64-token slices gave 342 ms but 12%
# fewer tokens/s, the slices too small to compute well.
ROUND_PREFILL_S = 0.3
# No slice is smaller: a 1,024-token prompt prefilled 869 tokens/s whole or in 256-token slices,
# 755 in 128s and 683 in 64s; the cells 0-2,560 of a long one 578 tokens/s in 512s, 529 in 256s
# and 469 in 192s (2-core AMD EPYC, 2 threads).
MIN_ROUND_TOKENS = 256
PROMPT_RATE_GUESS = 800.0  # tokens/s until the first prefill is measured (SmolLM2-135M, 2-core CPU)
RATE_SMOOTHING = 0.3  # weight of the newest prefill in the rate's moving average
MIN_MEASURED_TOKENS = 64  # a prefill of fewer tokens measures the call's overhead, not the rate
JOIN_COST_TOKENS = 16  # a newcomer's fixed cost (a stream taken over or copied, its sampler) in prompt tokens
# The waiting answers a round ranks by response ratio, the first in arrival order; those behind
# them keep their order (each ranked costs a look through the prefix cache, under the lock).
RANKED_ANSWERS = 32
# A background prompt (a summary's part, ~1,750 tokens) is prefilled this many tokens a round,
# only in rounds without answers to start; while answers stream, at most a quarter of the time.
WARM_SLICE = 256
# While answers stream, a background prompt's next slice waits this many times the last one's
# duration: at most a quarter of their time (a slice every round: between-token p95 2.8 s,
# bench/abuse.py --quick).
SLICE_SPACING = 3.0


@dataclass
class RoundPlan:
    """The requests prefilled whole this round (they join the batch), at most one whose prompt
    gets `slice_tokens` more tokens computed into the prefix cache, and the order the planner
    would start the waiting line in, `joining` first (the places told to waiting users)."""

    joining: list[ScheduledRequest] = field(default_factory=list)
    slicing: ScheduledRequest | None = None
    slice_tokens: int = 0
    order: list[ScheduledRequest] = field(default_factory=list)


class PrefillPace:
    """The prompt tokens per second this executor prefills (a moving average of what it did), and
    the budget of a round from it, between MIN_ROUND_TOKENS and `ceiling`. Unpaced (a GPU, which
    prefills the ceiling in milliseconds), the budget is the ceiling."""

    def __init__(self, ceiling: int, round_s: float = ROUND_PREFILL_S, paced: bool = True) -> None:
        self.ceiling = ceiling
        self.round_s = round_s
        self.paced = paced
        self.tokens_per_s = PROMPT_RATE_GUESS

    def record(self, tokens: int, seconds: float) -> None:
        if tokens >= MIN_MEASURED_TOKENS and seconds > 0:
            self.tokens_per_s += RATE_SMOOTHING * (tokens / seconds - self.tokens_per_s)

    @property
    def budget(self) -> int:
        if not self.paced:
            return self.ceiling
        return max(MIN_ROUND_TOKENS, min(self.ceiling, int(self.tokens_per_s * self.round_s)))

    def budget_beside(self, running: int) -> int:
        """The budget of a round beside `running` streaming rows; with none, a round stalls nobody
        and prefills in the larger passes that compute fastest."""
        return self.budget if running else self.ceiling

    def seconds(self, tokens: int) -> float:
        return (tokens + JOIN_COST_TOKENS) / self.tokens_per_s


def answer_order(answers: list[ScheduledRequest], uncached: Callable[[ScheduledRequest], int],
                 pace: PrefillPace, now: float) -> list[ScheduledRequest]:
    """Highest response ratio first: (waited + prefill) / prefill; arrival order breaks ties."""
    def ratio(r: ScheduledRequest) -> float:
        service = pace.seconds(uncached(r))
        return (now - r.submitted + service) / service
    return sorted(answers, key=ratio, reverse=True)


def plan_round(line: list[ScheduledRequest], running: Sequence[ScheduledRequest],
               cached_prefix: Callable[[list[int]], int], pace: PrefillPace, *, can_slice: bool,
               slice_due: bool, max_batch: int, max_tokens: int, now: float | None = None) -> RoundPlan:
    """One round's plan from `line` (WaitingLine's order: answers, then background, each by
    arrival), within max_batch rows and max_tokens of prompt and answer in flight (one request
    over that still runs, alone) and the pace's budget of uncached prompt tokens. Where the
    executor cannot slice (`can_slice` False), the first request always goes in whole. A
    background prompt longer than WARM_SLICE is sliced only in a round that starts nothing else,
    and while answers run only when `slice_due`. `cached_prefix(prompt)`: how many of its first
    tokens the executor's cache holds."""
    known: dict[int, int] = {}

    def uncached(r: ScheduledRequest) -> int:  # asked of each waiting prompt once a round
        if r.id not in known:
            known[r.id] = len(r.prompt) - cached_prefix(r.prompt)
        return known[r.id]

    arrived = [r for r in line if not r.params.background]
    answers = answer_order(arrived[:RANKED_ANSWERS], uncached, pace,
                           time.perf_counter() if now is None else now) + arrived[RANKED_ANSWERS:]
    plan = RoundPlan(order=answers + [r for r in line if r.params.background])
    left = pace.budget_beside(len(running))
    in_flight = sum(r.budget for r in running)
    for r in plan.order:
        if len(running) + len(plan.joining) >= max_batch:
            break
        alone = not running and not plan.joining
        if in_flight + r.budget > max_tokens and not alone:
            break
        need = uncached(r)
        if r.params.background and can_slice and need > WARM_SLICE:
            answering = any(not row.params.background for row in running)
            if not plan.joining and (slice_due or not answering):
                plan.slicing, plan.slice_tokens = r, WARM_SLICE
            break
        first = not plan.joining  # the first always starts: whole if it fits or cannot be sliced, else a slice
        if need + JOIN_COST_TOKENS <= left or (first and (need <= left or not can_slice)):
            plan.joining.append(r)
            left -= need + JOIN_COST_TOKENS
            in_flight += r.budget
            continue
        if can_slice and not r.params.background and need > left >= MIN_ROUND_TOKENS:  # else it joins next round
            plan.slicing, plan.slice_tokens = r, left
        break
    return plan
