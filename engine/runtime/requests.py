"""What the generation scheduler keeps about each request, its waiting line and its counters
(which waiting ones start in a round: engine/runtime/round_plan.py)."""
from __future__ import annotations

from dataclasses import dataclass

from engine.runtime.detokenize import IncrementalDetokenizer
from engine.runtime.generation import GenerationHandle, GenFinished, GenQueued, GenText, SamplingParams
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

    def in_vocabulary(self, vocab_size: int) -> bool:
        """Whether the model has every prompt token id (on a GPU one outside is a device-side assert)."""
        return all(0 <= t < vocab_size for t in self.prompt)

    def take(self, token: int, now: float, stop_ids: frozenset[int], cancel_all: bool) -> str | None:
        """Record the token just sampled and stream its text; why the request ends here, or None."""
        self.last_token = token
        self.generated += 1
        if self.generated == 1:
            self.first_token_s = now - self.submitted
        if self.handle.cancelled or cancel_all:
            return "cancelled"
        if token in stop_ids:
            return "stop"
        delta = self.detok.push(token)
        if delta:
            self.handle.emit(GenText(delta))
        return "length" if self.generated >= self.max_new else None

    def finish(self, reason: str, now: float) -> GenFinished:
        """Stream what text the detokenizer still holds (unless cancelled); the closing event."""
        if reason != "cancelled" and self.detok is not None:
            rest = self.detok.finish()
            if rest:
                self.handle.emit(GenText(rest))
        completion = len(self.detok.ids) if self.detok is not None else 0
        return GenFinished(reason=reason, prompt_tokens=len(self.prompt), completion_tokens=completion,
                           first_token_s=self.first_token_s, total_s=now - self.submitted)


class WaitingLine:
    """The requests waiting to start: answers before background work (a summary's parts), each in
    arrival order (the round planner then starts the answers by response ratio, and the places
    told to waiting users follow its order). Its owner holds the lock around every call."""

    def __init__(self) -> None:
        self._waiting: list[ScheduledRequest] = []  # arrival order

    def __len__(self) -> int:
        return len(self._waiting)

    def in_order(self) -> list[ScheduledRequest]:
        return sorted(self._waiting, key=lambda r: r.params.background)  # stable: arrival order within each

    def ahead_of_new(self, background: bool) -> int:
        """How many would start before a request of this kind arriving now."""
        return len(self._waiting) if background else sum(not r.params.background for r in self._waiting)

    def add(self, request: ScheduledRequest) -> None:
        self._waiting.append(request)

    def remove(self, request: ScheduledRequest) -> None:
        self._waiting.remove(request)

    def drain(self) -> list[ScheduledRequest]:
        """Every waiting request, the line left empty."""
        waiting = self._waiting
        self._waiting = []
        return waiting

    def leave_cancelled(self, everyone: bool) -> list[ScheduledRequest]:
        """Take out the requests cancelled while waiting (all of them when `everyone`)."""
        cancelled = [r for r in self._waiting if everyone or r.handle.cancelled]
        self._waiting = [r for r in self._waiting if not (everyone or r.handle.cancelled)]
        return cancelled

    def report_positions(self, order: list[ScheduledRequest]) -> None:
        """Tell each request whose place in line changed how many are ahead of it now, in the
        order they would start (`order`: the round planner's, which saw the whole line)."""
        waiting = set(map(id, self._waiting))
        for ahead, r in enumerate(r for r in order if id(r) in waiting):
            if r.reported_ahead != ahead:
                r.reported_ahead = ahead
                r.handle.emit(GenQueued(ahead))


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
