"""Counters and latency samples behind /llm-stats (and the Prometheus metrics).

With Redis (engine/shared_stats.py) every change is also kept as a delta, which a sync task adds
to totals in Redis once a second and replaces with the totals of every replica: the counters and
each person's usage of the day are then the same, summed, whichever replica is asked. Latency
percentiles and histograms stay this process's.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

SAMPLES = 2000  # latency samples kept for percentiles
# Histogram bounds (seconds) for the Prometheus latency metrics; the last bucket is +Inf.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


@dataclass
class Histogram:
    """Cumulative-at-export counts per bucket, as Prometheus histograms want them."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


MAX_USERS = 50_000  # users whose figures of the day are kept
# The counters summed across replicas (with Redis); errors and rate limits by kind too.
SHARED_FIELDS = ("requests", "answered", "cancelled", "prompt_tokens", "completion_tokens", "generation_seconds",
                 "rate_limited", "ingests", "ingested_chunks")


def _by_prefix(totals: dict, prefix: str) -> dict:
    return {name[len(prefix):]: int(n) for name, n in totals.items() if name.startswith(prefix) and n}


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


@dataclass
class UserUsage:
    """One person's use of Parley today: what the Home tab and /llm-stats show them."""

    day: str
    questions: int = 0
    tokens: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=256))  # when their last questions came

    @property
    def last_minute(self) -> int:
        return len(self.recent)


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
    rate_limited_by: Counter = field(default_factory=Counter)  # bucket kind -> hits
    errors: Counter = field(default_factory=Counter)
    ingests: int = 0
    ingested_chunks: int = 0
    first_token_hist: Histogram = field(default_factory=Histogram)
    latency_hist: Histogram = field(default_factory=Histogram)
    usage: dict = field(default_factory=dict)  # "platform/workspace/user" -> UserUsage (today's)
    first_token_s: deque = field(default_factory=lambda: deque(maxlen=SAMPLES))
    latency_s: deque = field(default_factory=lambda: deque(maxlen=SAMPLES))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sharing: bool = False  # a sync task takes the deltas and hands back every replica's totals
    _deltas: Counter = field(default_factory=Counter, repr=False)  # name -> change since the last sync
    _shared: dict | None = field(default=None, repr=False)  # every replica's totals, once synced
    _shared_usage: dict = field(default_factory=dict, repr=False)  # "platform/workspace/user" -> (q, tokens)

    def _count(self, name: str, n: float = 1) -> None:
        """Keep a change for the sync (under the lock)."""
        if self.sharing:
            self._deltas[name] += n

    def take_deltas(self) -> Counter:
        """The changes since the last call (the sync adds them to the shared totals)."""
        with self._lock:
            deltas = self._deltas
            self._deltas = Counter()
            return deltas

    def give_back_deltas(self, deltas: Counter) -> None:
        """Changes the sync could not store: kept for the next try."""
        with self._lock:
            self._deltas.update(deltas)

    def use_shared(self, totals: dict, usage: dict) -> None:
        """Every replica's totals (SHARED_FIELDS, "error:CODE", "limited:KIND") and today's usage."""
        with self._lock:
            self._shared = totals
            self._shared_usage = usage

    def _shared_usage_of(self, user: str) -> tuple[int, int]:
        """`user`'s questions and tokens today on every replica (with this one's not yet synced)."""
        questions, tokens = self._shared_usage.get(user, (0, 0))
        return questions + int(self._deltas.get(f"q|{user}", 0)), tokens + int(self._deltas.get(f"t|{user}", 0))

    def record_request(self) -> None:
        with self._lock:
            self.requests += 1
            self._count("requests")

    def record_question(self, user: str, at: float | None = None) -> None:
        """A question asked by `user` ("platform/workspace/user id"), for their own usage figures."""
        at = time.time() if at is None else at
        with self._lock:
            usage = self._usage_of(user, at)
            usage.questions += 1
            usage.recent.append(at)
            self._count(f"q|{user}")

    def record_user_tokens(self, user: str, tokens: int, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            self._usage_of(user, at).tokens += tokens
            self._count(f"t|{user}", tokens)

    def user_usage(self, user: str, at: float | None = None) -> UserUsage:
        """`user`'s figures for today (UTC): questions, tokens, and the questions of the last minute."""
        at = time.time() if at is None else at
        with self._lock:
            usage = self.usage.get(user)
            if usage is None or usage.day != _day(at):
                usage = UserUsage(_day(at))
            questions, tokens = self._shared_usage_of(user) if self._shared is not None \
                else (usage.questions, usage.tokens)
            return UserUsage(usage.day, questions, tokens, deque(t for t in usage.recent if at - t < 60))

    def workspace_usage(self, workspace: str, at: float | None = None) -> tuple[int, int, int]:
        """Today's (people, questions, tokens) in `workspace` ("platform/workspace"), for its admins."""
        at = time.time() if at is None else at
        day = _day(at)
        with self._lock:
            if self._shared is not None:
                users = {k.partition("|")[2] for k in self._deltas if "|" in k} | set(self._shared_usage)
                shared = [self._shared_usage_of(u) for u in users if u.rpartition("/")[0] == workspace]
                return len(shared), sum(q for q, _ in shared), sum(t for _, t in shared)
            today = [u for key, u in self.usage.items() if key.rpartition("/")[0] == workspace and u.day == day]
        return len(today), sum(u.questions for u in today), sum(u.tokens for u in today)

    def _usage_of(self, user: str, at: float) -> UserUsage:
        day = _day(at)
        usage = self.usage.get(user)
        if usage is None or usage.day != day:
            if len(self.usage) >= MAX_USERS:  # yesterday's figures go first
                for key in [k for k, u in self.usage.items() if u.day != day][: MAX_USERS // 2] or [next(iter(self.usage))]:
                    del self.usage[key]
            usage = self.usage[user] = UserUsage(day)
        return usage

    def record_answer(self, *, prompt_tokens: int, completion_tokens: int, first_token_s: float | None,
                      total_s: float, cancelled: bool) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.generation_seconds += total_s
            for name, n in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens),
                            ("generation_seconds", total_s), ("cancelled" if cancelled else "answered", 1)):
                self._count(name, n)
            if cancelled:
                self.cancelled += 1
                return
            self.answered += 1
            if first_token_s is not None:
                self.first_token_s.append(first_token_s)
                self.first_token_hist.observe(first_token_s)
            self.latency_s.append(total_s)
            self.latency_hist.observe(total_s)

    def record_error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1
            self._count(f"error:{code}")

    def record_rate_limited(self, bucket: str = "user") -> None:
        with self._lock:
            self.rate_limited += 1
            self.rate_limited_by[bucket] += 1
            self._count("rate_limited")
            self._count(f"limited:{bucket}")

    def record_ingest(self, chunks: int) -> None:
        with self._lock:
            self.ingests += 1
            self.ingested_chunks += chunks
            self._count("ingests")
            self._count("ingested_chunks", chunks)

    def snapshot(self) -> dict:
        with self._lock:
            ttft = list(self.first_token_s)
            latency = list(self.latency_s)
            snap = self._local_snapshot(ttft, latency)
            if self._shared is not None:  # every replica's counters, summed (and this one's not yet synced)
                totals = Counter(self._shared)
                totals.update({k: n for k, n in self._deltas.items() if "|" not in k})
                snap.update({name: totals.get(name, 0) for name in SHARED_FIELDS})
                snap["errors"] = _by_prefix(totals, "error:")
                snap["rate_limited_by"] = _by_prefix(totals, "limited:")
                seconds = snap["generation_seconds"]
                snap["tokens_per_s"] = snap["completion_tokens"] / seconds if seconds else 0.0
            snap.pop("generation_seconds")
            return snap

    def _local_snapshot(self, ttft: list[float], latency: list[float]) -> dict:
        return {
            "generation_seconds": self.generation_seconds,
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
            "rate_limited_by": dict(self.rate_limited_by),
            "errors": dict(self.errors),
            "ingests": self.ingests,
            "ingested_chunks": self.ingested_chunks,
            "first_token_hist": (self.first_token_hist.cumulative(), self.first_token_hist.total),
            "latency_hist": (self.latency_hist.cumulative(), self.latency_hist.total),
        }
