"""What the generation scheduler keeps about each request, which waiting ones may start, and its
counters."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.runtime.detokenize import IncrementalDetokenizer
from engine.runtime.generation import GenerationHandle, SamplingParams
from engine.runtime.sampling import RowSampler


@dataclass(eq=False)
class ScheduledRequest:
    """A request as the scheduler tracks it, from submit to its last token."""

    id: int
    prompt: list[int]
    params: SamplingParams
    max_new: int  # max_new_tokens clipped to the context window
    handle: GenerationHandle
    submitted: float
    reported_ahead: int | None = None
    sampler: RowSampler | None = None
    detok: IncrementalDetokenizer | None = None
    generated: int = 0  # tokens sampled, the stop token included
    first_token_s: float = 0.0
    last_token: int = 0  # fed to the next decode step

    @property
    def budget(self) -> int:
        return len(self.prompt) + self.max_new


def admissible(waiting: Iterable[ScheduledRequest], running: Sequence[ScheduledRequest], *, max_batch: int,
               max_tokens: int, prefill_budget: int) -> int:
    """How many of `waiting`, first come first served, may join `running` now: within max_batch
    rows and max_tokens of prompt and answer in flight (one request over that limit still runs,
    alone), and within prefill_budget prompt tokens for one prefill (the first always goes in)."""
    count = 0
    in_flight = sum(r.budget for r in running)
    prompt_tokens = 0
    for r in waiting:
        if len(running) + count >= max_batch:
            break
        alone = not running and count == 0
        if in_flight + r.budget > max_tokens and not alone:
            break
        if count and prompt_tokens + len(r.prompt) > prefill_budget:
            break
        count += 1
        in_flight += r.budget
        prompt_tokens += len(r.prompt)
    return count


@dataclass
class SchedulerStats:
    """The scheduler's counters (its snapshot)."""

    tokens_generated: int = 0
    prompt_tokens: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    busy_seconds: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0
    prefill_seconds: float = 0.0

    def figures(self) -> dict:
        return {
            "tokens_generated": self.tokens_generated,
            "prompt_tokens": self.prompt_tokens,
            "requests_finished": self.requests_finished,
            "requests_cancelled": self.requests_cancelled,
            "requests_failed": self.requests_failed,
            "busy_seconds": round(self.busy_seconds, 3),
            "prefill_seconds": round(self.prefill_seconds, 3),
            "decode_steps": self.decode_steps,
            "mean_batch": round(self.decode_rows / self.decode_steps, 2) if self.decode_steps else 0.0,
        }
