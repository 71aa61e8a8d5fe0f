"""Counters and latency samples behind /llm-stats (and the Prometheus metrics)."""
from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

SAMPLES = 2000  # latency samples kept for percentiles


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class EngineStats:
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    answered: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    rate_limited: int = 0
    errors: Counter = field(default_factory=Counter)
    first_token_s: deque = field(default_factory=lambda: deque(maxlen=SAMPLES))
    latency_s: deque = field(default_factory=lambda: deque(maxlen=SAMPLES))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self) -> None:
        with self._lock:
            self.requests += 1

    def record_answer(self, *, prompt_tokens: int, completion_tokens: int, first_token_s: float | None,
                      total_s: float, cancelled: bool) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.generation_seconds += total_s
            if cancelled:
                self.cancelled += 1
                return
            self.answered += 1
            if first_token_s is not None:
                self.first_token_s.append(first_token_s)
            self.latency_s.append(total_s)

    def record_error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def record_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def snapshot(self) -> dict:
        with self._lock:
            ttft = list(self.first_token_s)
            latency = list(self.latency_s)
            return {
                "uptime_s": time.time() - self.started_at,
                "requests": self.requests,
                "answered": self.answered,
                "cancelled": self.cancelled,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "tokens_per_s": (self.completion_tokens / self.generation_seconds) if self.generation_seconds else 0.0,
                "ttft_p50_s": percentile(ttft, 50),
                "ttft_p95_s": percentile(ttft, 95),
                "latency_p50_s": percentile(latency, 50),
                "latency_p95_s": percentile(latency, 95),
                "rate_limited": self.rate_limited,
                "errors": dict(self.errors),
            }
