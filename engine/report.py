"""Renders the engine's figures as the few readable lines of /llm-stats.

`Reports` is handed where the figures live (the counters, the engine's snapshot, the stores).
Who sees what is engine/authority.py's: every figure of the process (model, memory, queue,
errors across every workspace) for operators, the workspace's own figures for its admins, a
short summary of their own for anyone. It also reads the 👎 comments for /llm-audit feedback.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import psutil

from engine.authority import Authority
from engine.channels import ChannelSettings
from engine.config import LimitsConfig
from engine.feedback import FeedbackBook, FeedbackComment, FeedbackCounts
from engine.sessions import SessionStore
from engine.stats import EngineStats
from engine.types import Conversation, EngineSnapshot, StatsReport, User

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def memory_figures() -> dict:
    """Process RSS, and on CUDA allocated/reserved/peak memory and fragmentation."""
    figures = {"rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
               "system_total_bytes": psutil.virtual_memory().total}
    try:
        import torch

        if torch.cuda.is_available():
            allocated = torch.cuda.memory_allocated()
            reserved = torch.cuda.memory_reserved()
            figures.update(cuda_allocated_bytes=allocated, cuda_reserved_bytes=reserved,
                           cuda_peak_bytes=torch.cuda.max_memory_allocated(),
                           cuda_total_bytes=torch.cuda.get_device_properties(0).total_memory,
                           cuda_fragmentation=(1 - allocated / reserved) if reserved else 0.0)
    except Exception:  # noqa: BLE001 - stats must render even when the CUDA query fails
        pass
    return figures


def _queue_line(sched: dict) -> str:
    return (f"*Queue* {sched.get('running', 0)} running (max {sched.get('max_batch', '?')}), "
            f"{sched.get('queued', 0)} waiting; {sched.get('tokens_in_flight', 0):,} of "
            f"{sched.get('max_tokens_in_flight', 0):,} tokens in flight; prompts prefilled at "
            f"{sched.get('prefill_tokens_per_s', 0):,} tokens/s, {sched.get('prefill_budget', 0):,} a round"
            + _runtime(sched))


def _runtime(sched: dict) -> str:
    """"; llama.cpp on 2 of 2 threads, a KV stream per request, 2,931 prompt tokens from the prefix
    cache" (llama.cpp only)."""
    if sched.get("executor") != "llama.cpp":
        return ""
    layout = "a KV stream per request" if sched.get("kv_streams") else "one KV buffer for all"
    return (f"; llama.cpp on {sched.get('threads')} of {sched.get('max_threads')} threads, {layout}, "
            f"{sched.get('prefix_tokens_reused', 0):,} prompt tokens from the prefix cache")


def _share(up: int, down: int) -> str:
    share = FeedbackCounts.share(up, down)
    return f"{up} 👍 / {down} 👎" + (f" ({share:.0%} positive)" if share is not None else "")


def feedback_lines(counts: list[FeedbackCounts]) -> list[str]:
    """"*Feedback* smollm2-135m: last day 3 👍 / 1 👎 (75% positive); last week 9 👍 / 2 👎 (82% positive)"."""
    if not counts:
        return ["*Feedback* none in the last week"]
    return [f"*Feedback* {c.model}: last day {_share(c.day_up, c.day_down)}; "
            f"last week {_share(c.week_up, c.week_down)}" for c in counts]


def _memory_line(memory: dict, pressure: dict) -> str:
    mem = f"*Memory* RSS {_mib(memory['rss_bytes'])}"
    if "cuda_allocated_bytes" in memory:
        mem += (f"; GPU {_mib(memory['cuda_allocated_bytes'])} allocated, {_mib(memory['cuda_reserved_bytes'])} "
                f"reserved, peak {_mib(memory['cuda_peak_bytes'])}, "
                f"fragmentation {memory['cuda_fragmentation']:.0%}")
    if pressure.get("fraction") is not None:
        device = "GPU" if str(pressure.get("device", "")).startswith("cuda") else "RAM"
        state = {"ok": "", "warn": " (high)", "act": " (critical: new work refused, batch shrunk)"}
        mem += f"; {device} {pressure['fraction']:.0%} used{state.get(pressure['state'], '')}"
    return mem


def _model_line(name: str | None, model: dict) -> str:
    """"*Model* smollm2-135m on cpu (float32), 135M params, loaded in 1.2 s"."""
    if not name:
        return "*Model* none loaded"
    params = model.get("parameters")
    return (f"*Model* {name} on {model.get('device', '?')} ({model.get('dtype', '?')})"
            + (f", {params / 1e6:,.0f}M params" if params else "")
            + (f", loaded in {model['load_seconds']:.1f} s" if model.get("load_seconds") else ""))


def _traffic_lines(s: dict, sched: dict) -> list[str]:
    """The requests, tokens and latency lines (and the queue's, when a scheduler reports one)."""
    limited = s["rate_limited"]
    by_bucket = ", ".join(f"{n} {kind}" for kind, n in sorted(s.get("rate_limited_by", {}).items()))
    busy = sched.get("busy_seconds") or 0
    throughput = sched.get("tokens_generated", 0) / busy if busy else None
    lines = [
        f"*Requests* {s['requests']} ({s['answered']} answered, {s['cancelled']} cancelled, "
        f"{sum(s['errors'].values())} errors, {limited} rate-limited"
        + (f": {by_bucket}" if limited and by_bucket else "") + ")",
        f"*Tokens* {s['prompt_tokens']:,} in / {s['completion_tokens']:,} out; "
        + (f"{throughput:.0f} tok/s aggregate, " if throughput else "")
        + f"{s['tokens_per_s']:.1f} tok/s per answer",
        f"*Latency* first token p50 {_seconds(s['ttft_p50_s'])} / p95 {_seconds(s['ttft_p95_s'])}; "
        f"answer p50 {_seconds(s['latency_p50_s'])} / p95 {_seconds(s['latency_p95_s'])}"]
    if sched:
        lines.append(_queue_line(sched))
    return lines


def _documents_line(knowledge: dict) -> str:
    mean = knowledge.get("mean_search_ms")
    return (f"*Documents* {knowledge.get('documents', 0)} ({knowledge.get('chunks', 0)} chunks); "
            f"{knowledge.get('searches', 0)} searches" + (f", mean {mean:.0f} ms" if mean else ""))


class Reports:
    """/llm-stats: the full figures (`stats`), a workspace's (`workspace`), what anyone may see
    (`summary`), and `report`, which picks by the asker's role."""

    def __init__(self, *, stats: EngineStats, limits: LimitsConfig, authority: Authority,
                 snapshot: Callable[[], EngineSnapshot], sessions: SessionStore,
                 knowledge: KnowledgeBase | None, feedback: FeedbackBook | None,
                 channel_settings: Callable[[Conversation], Awaitable[ChannelSettings]]):
        self._stats = stats
        self._limits = limits
        self._authority = authority
        self._snapshot = snapshot
        self._sessions = sessions
        self._knowledge = knowledge
        self._feedback = feedback
        self._channel_settings = channel_settings

    def usage_line(self, where: Conversation, user: User) -> tuple[str, dict]:
        """"*You today* 3 questions, 1,204 tokens; 7 of 10 questions left this minute"."""
        usage = self._stats.user_usage(f"{where.platform}/{where.workspace}/{user.id}")
        limits = self._limits
        exempt = self._authority.exempt(where, user)
        left = max(0, limits.user_per_minute - usage.last_minute)
        headroom = f"no rate limit for you ({self._authority.role_of(where, user).label.replace('_', ' ')})" if exempt else \
            f"{left} of {limits.user_per_minute} questions left this minute"
        line = f"*You today* {usage.questions} questions, {usage.tokens:,} tokens; {headroom}"
        return line, {"questions": usage.questions, "tokens": usage.tokens,
                      "left_this_minute": None if exempt else left, "per_minute": limits.user_per_minute}

    async def summary(self, where: Conversation, user: User) -> StatsReport:
        """The short /llm-stats anyone gets: the live model, the queue, their own usage and limits."""
        snap = self._snapshot()
        sched = snap.scheduler
        line, usage = self.usage_line(where, user)
        lines = [f"*Model* {snap.model_name or 'none loaded'}",
                 f"*Queue* {sched.get('queued', 0)} waiting, {sched.get('running', 0)} being answered",
                 line, "_The full figures are for admins._"]
        return StatsReport(lines=tuple(lines), values={"usage": usage, "queued": sched.get("queued", 0),
                                                       "model": snap.model_name})

    async def report(self, where: Conversation, user: User) -> StatsReport:
        """/llm-stats as `user` may see it here: an operator every figure, a workspace admin the
        workspace's, anyone else the short summary."""
        if self._authority.allows("view_process_stats", where, user):
            return await self.stats(where)
        if self._authority.allows("view_workspace_stats", where, user):
            return await self.workspace(where, user)
        return await self.summary(where, user)

    async def workspace(self, where: Conversation, user: User) -> StatsReport:
        """A workspace admin's figures: the live model, the workspace's questions today, its
        documents, this channel's settings, its feedback; nothing of other workspaces or the machine."""
        await self._authority.require("view_workspace_stats", where, user)
        snap = self._snapshot()
        people, questions, tokens = self._stats.workspace_usage(f"{where.platform}/{where.workspace}")
        lines = [f"*Model* {snap.model_name or 'none loaded'} (live)",
                 f"*This workspace today* {questions} questions from {people} people, {tokens:,} tokens",
                 self.usage_line(where, user)[0]]
        documents = await self._knowledge.list_documents(where, workspace_wide=True) if self._knowledge else []
        if self._knowledge is not None:
            lines.append(f"*Documents* {len(documents)} readable across the workspace")
        if where.channel:
            lines.append("*This channel* " + "; ".join((await self._channel_settings(where)).render()))
        feedback = await self._feedback.counts(where.platform, where.workspace) if self._feedback else []
        lines.extend(feedback_lines(feedback))
        lines.append("_The figures of the whole process, every workspace's, are for Parley's operators._")
        return StatsReport(lines=tuple(lines), values={"model": snap.model_name, "questions": questions,
                                                       "people": people, "tokens": tokens,
                                                       "documents": len(documents), "feedback": feedback})

    async def comments(self, where: Conversation, user: User, limit: int) -> list[FeedbackComment]:
        """The newest 👎 comments: on this workspace's answers for its admins, on every one for operators."""
        await self._authority.require("view_audit", where, user, target="feedback")
        if self._feedback is None:
            return []
        if self._authority.allows("view_all_audit", where, user):
            return await self._feedback.comments(limit)
        return await self._feedback.comments(limit, where.platform, where.workspace)

    async def _feedback_counts(self) -> tuple[list[FeedbackCounts], dict]:
        if self._feedback is None:
            return [], {}
        return await self._feedback.counts(), await self._feedback.totals()

    async def stats(self, where: Conversation | None) -> StatsReport:
        """Every figure: the model, traffic, latency, queue, sessions, memory, documents, feedback
        (and `where`'s channel settings)."""
        s = self._stats.snapshot()
        snap = self._snapshot()
        memory = await asyncio.to_thread(memory_figures)
        sessions_active = await asyncio.to_thread(self._sessions.active_since, time.time() - 86400)
        knowledge = await asyncio.to_thread(self._knowledge.stats) if self._knowledge else {}
        lines = [_model_line(snap.model_name, snap.model), *_traffic_lines(s, snap.scheduler),
                 f"*Sessions* {sessions_active} active in the last day", _memory_line(memory, snap.pressure)]
        if knowledge:
            lines.append(_documents_line(knowledge))
        if where is not None:
            channel = await self._channel_settings(where)
            lines.append("*This channel* " + "; ".join(channel.render()))
        if s["errors"]:
            lines.append("*Errors* " + ", ".join(f"{code} {n}" for code, n in sorted(s["errors"].items())))
        feedback, totals = await self._feedback_counts()
        lines.extend(feedback_lines(feedback))
        values = {**s, "model": snap.model, "scheduler": snap.scheduler, "memory": memory,
                  "knowledge": knowledge, "sessions_active": sessions_active, "pressure": snap.pressure,
                  "feedback": feedback, "feedback_totals": totals}
        return StatsReport(lines=tuple(lines), values=values)
