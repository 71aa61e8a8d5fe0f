"""Summaries of a conversation, platform-free: messages in, a short list of points out.

The messages ("Ana: the launch moved to Tuesday") are packed into parts that fit the model's
context window with the instructions and the answer; each part is summarised on its own, and
when there was more than one, their points are combined the same way (in as many rounds as it
takes) into one list. Sampling is greedy and the instructions forbid adding anything: a summary
says what was said, by whom. No messages, no model call.

What it costs is admitted before anything is read (`Summaries.begin`, through Engine.summarizing):
the asker's rate limits and a summary call left (engine/limits.py), and one summary per asker at a
time. Its model calls are charged as they are known: the first round's all at once once the
messages are packed (refused before any call if they do not fit), each combining round's as it starts.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from engine.admission import Admission, Resolve
from engine.channels import ChannelSettings
from engine.errors import ErrorCode, ParleyError
from engine.lineup import ModelLineup
from engine.prompting import MESSAGE_OVERHEAD, speaker_label
from engine.runtime.backends import Backend
from engine.runtime.generation import GenFinished, GenText, SamplingParams
from engine.types import Conversation, SaidMessage, Summary, SummaryProgress, User

log = logging.getLogger(__name__)

MAX_POINTS = 8
SUMMARY_TOKENS = 200  # the most a part's (or the final) summary may take
MAX_ROUNDS = 4  # combining rounds before giving up on shrinking further
CONCURRENT_PARTS = 4  # parts summarised at once (the scheduler batches them)
SUMMARISE = ("You summarise a chat conversation. Write at most {n} short bullet points, each on its own line "
             "starting with '- ' and naming who said it (for example '- Ana: the launch moved to Tuesday'). "
             "Use only what the messages say; never add anything.")
COMBINE = ("You combine partial summaries of one chat conversation into one list. Write at most {n} short "
           "bullet points, each on its own line starting with '- ' and keeping the names of who said it. "
           "Use only what the partial summaries say; never add anything.")
STOPPED = "Summary stopped: Parley is restarting. Please ask again in a minute."
ALREADY = "I'm already summarising for you — wait for that one."
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s*")


def said_line(message: SaidMessage) -> str:
    """One message as the model reads it: "Ana: …", or a placeholder as it is."""
    text = " ".join(message.text.split())
    name = speaker_label(message.speaker)
    return f"{name}: {text}" if name else text


def points_of(text: str, limit: int = MAX_POINTS) -> tuple[str, ...]:
    """The model's answer as points: one per non-empty line, bullets and numbering removed,
    short heading lines ("Summary:") dropped."""
    points = []
    for line in text.splitlines():
        point = _BULLET.sub("", line).strip()
        if point and (not point.endswith(":") or len(point) > 40):
            points.append(point)
    return tuple(points[:limit])


def speakers_of(messages: Sequence[SaidMessage]) -> tuple[str, ...]:
    """Who spoke, most messages first."""
    counts = Counter(m.speaker for m in messages if m.speaker)
    return tuple(name for name, _ in counts.most_common())


def _cut(line: str, budget: int, count: Callable[[str], int]) -> str:
    """A line too long for any part, cut at a word to fit, marked as cut."""
    words = line.split(" ")
    while len(words) > 1 and count(" ".join(words) + " …") + 1 > budget:
        words = words[: max(1, len(words) * 3 // 4)]
    return " ".join(words) + " …"


class Charge(Protocol):
    """Pays for a summary's model calls (Admission.charge_summary, bound to its asker): all of
    them or none (RATE_LIMITED); `force` pays whatever is left (a round already begun)."""

    async def __call__(self, calls: int, *, force: bool = False) -> None: ...


async def _free(calls: int, *, force: bool = False) -> None:
    """No charge: a Summariser on its own (benchmarks, tests)."""


class Summariser:
    """One summary on one backend: packs, generates, combines; counts its model calls and pays
    for them before making them."""

    def __init__(self, backend: Backend, progress: SummaryProgress | None = None, charge: Charge = _free):
        self.backend = backend
        self.progress = progress
        self.charge = charge
        cfg = backend.config
        self.max_new = min(SUMMARY_TOKENS, cfg.generation.max_new_tokens, max(32, cfg.context_window // 4))
        self.params = SamplingParams.from_defaults(cfg.generation, temperature=0.0, max_new_tokens=self.max_new,
                                                  background=True)  # the answers go first (scheduler)
        self.calls = 0

    def pack(self, lines: Sequence[str], instructions: str) -> list[list[str]]:
        """Consecutive lines in parts that fit the window with `instructions` and the answer.
        Blocking: it tokenises."""
        count = self.backend.count_tokens
        budget = (self.backend.config.context_window - count(instructions) - self.max_new
                  - 4 * MESSAGE_OVERHEAD - 16)
        if budget < 64:
            raise ParleyError(ErrorCode.CONTEXT_TOO_LONG,
                              "The model's context window is too small to summarise in.")
        parts: list[list[str]] = [[]]
        used = 0
        for line in lines:
            cost = count(line) + 1
            if cost > budget:
                line = _cut(line, budget, count)
                cost = count(line) + 1
            if parts[-1] and used + cost > budget:
                parts.append([])
                used = 0
            parts[-1].append(line)
            used += cost
        return [p for p in parts if p]

    async def generate(self, instructions: str, lines: Sequence[str]) -> str:
        """One model call: `lines` summarised under `instructions`."""
        messages = [{"role": "system", "content": instructions}, {"role": "user", "content": "\n".join(lines)}]
        prompt = await asyncio.to_thread(self.backend.encode_chat, messages)
        self.calls += 1
        out: list[str] = []
        async for event in self.backend.submit(prompt, self.params):
            if isinstance(event, GenText):
                out.append(event.text)
            elif isinstance(event, GenFinished) and event.reason == "cancelled":
                # a part cut short would be summarised as if it were all that was said
                raise ParleyError(ErrorCode.CANCELLED, "The summary was stopped before it was done.")
        return "".join(out).strip()

    async def summarise_parts(self, parts: list[list[str]], instructions: str, report: bool) -> list[str]:
        """Each part's summary, in order; with `report`, progress is told as parts finish."""
        gate = asyncio.Semaphore(CONCURRENT_PARTS)
        done = 0

        async def one(part: list[str]) -> str:
            nonlocal done
            async with gate:
                text = await self.generate(instructions, part)
            done += 1
            if report:
                await self._report(done, len(parts))
            return text

        tasks = [asyncio.ensure_future(one(p)) for p in parts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # one part failed (or the shutdown cut it short): the others stop too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _report(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        try:
            result = self.progress(done, total)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a failing progress display must not fail the summary
            log.warning("summary progress callback failed", exc_info=True)

    async def run(self, messages: Sequence[SaidMessage]) -> tuple[str, int]:
        """The final text, and how many parts the messages were first summarised in."""
        instructions = SUMMARISE.format(n=MAX_POINTS)
        parts = await asyncio.to_thread(self.pack, [said_line(m) for m in messages], instructions)
        first = len(parts)
        await self.charge(first)  # all of the first round, or none: refused before any model call
        if first > 1:
            await self._report(0, first)
        texts = await self.summarise_parts(parts, instructions, report=first > 1)
        combine = COMBINE.format(n=MAX_POINTS)
        for _ in range(MAX_ROUNDS):
            if len(texts) == 1:
                break
            points = [f"- {p}" for text in texts for p in points_of(text, limit=MAX_POINTS * 2)]
            parts = await asyncio.to_thread(self.pack, points, combine)
            await self.charge(len(parts), force=True)  # a summary begun is finished; the next one waits longer
            texts = await self.summarise_parts(parts, combine, report=False)
        return "\n".join(texts), first


class SummaryRun:
    """One admitted summary: whose, where. Its asker's slot is held until `end` (the adapter reads
    the messages in between, then hands them to Engine.summarize with this run)."""

    def __init__(self, where: Conversation, user: User, release: Callable[[], None]):
        self.where = where
        self.user = user  # as admission judged them
        self._release = release
        self.ended = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._release()


class Summaries:
    """Summaries on the model of each channel: admitted before the reading, charged per model call."""

    def __init__(self, *, lineup: ModelLineup, settings: Callable[[Conversation], Awaitable[ChannelSettings]],
                 admission: Admission, state: Callable[[], str]):
        self._lineup = lineup
        self._settings = settings
        self._admission = admission
        self._state = state  # the engine's: new -> ready -> stopping -> stopped
        self._running: set[str] = set()  # askers with a summary admitted and not ended (this process)

    def _ready(self) -> None:
        state = self._state()
        if state != "ready":
            raise ParleyError(ErrorCode.MODEL_NOT_READY if state == "new" else ErrorCode.SHUTTING_DOWN)

    async def begin(self, where: Conversation, user: User, resolve: Resolve | None = None) -> SummaryRun:
        """Before anything is read: the engine ready, the asker within their rate limits with a
        summary call left (engine/admission.py; `resolve` as for precheck), and no other summary
        of theirs running (RATE_LIMITED, ALREADY). The caller ends the run."""
        self._ready()
        key = f"{where.platform}/{where.workspace}/{user.id}"
        self._refuse_if_running(key)  # first: a repeated attempt spends none of the asker's units
        user = await self._admission.admit(where, user, "summary", resolve)
        self._refuse_if_running(key)  # again: admit awaited, and nothing is awaited from here on
        self._running.add(key)
        return SummaryRun(where, user, functools.partial(self._running.discard, key))

    def _refuse_if_running(self, key: str) -> None:
        if key in self._running:
            error = ParleyError(ErrorCode.RATE_LIMITED, ALREADY)
            error.limit = "summary_running"
            raise error

    @contextlib.asynccontextmanager
    async def summarizing(self, where: Conversation, user: User,
                          resolve: Resolve | None = None) -> AsyncIterator[SummaryRun]:
        """`begin` (a refusal counted and logged once, as the engine's commands are), the run
        for the body, and its end whatever happens."""
        try:
            run = await self.begin(where, user, resolve)
        except ParleyError as exc:
            self._admission.failure(exc, action="summarize", args=(where, user))
            raise
        try:
            yield run
        finally:
            run.end()

    async def summarize(self, where: Conversation, user: User, messages: Sequence[SaidMessage],
                        progress: SummaryProgress | None = None, run: SummaryRun | None = None) -> Summary:
        """Summarise `messages` (oldest first) with the model of `where`'s channel, under `run`
        (admitted by `begin`), or admitted now."""
        said = [m for m in messages if m.text.strip()]
        if not said:
            return Summary(points=(), messages=0, speakers=(), parts=0, model_calls=0)
        if run is not None:
            return await self._summarize(run, said, progress)
        run = await self.begin(where, user)
        try:
            return await self._summarize(run, said, progress)
        finally:
            run.end()

    async def _summarize(self, run: SummaryRun, said: list[SaidMessage], progress: SummaryProgress | None) -> Summary:
        if run.ended:
            raise ParleyError(ErrorCode.INTERNAL, detail="a summary run used after its end")
        self._ready()
        where = run.where
        user = run.user
        settings = await self._settings(where)
        charge = functools.partial(self._admission.charge_summary, where, user)
        summariser = Summariser(await self._lineup.backend_for(settings.model), progress, charge)
        try:
            text, parts = await summariser.run(said)
        except ParleyError as exc:
            if self._state() in ("stopping", "stopped"):  # cancelled by the shutdown: never partial text
                # CANCELLED, not SHUTTING_DOWN: shown where its progress was, not to the asker alone
                raise ParleyError(ErrorCode.CANCELLED, STOPPED, reference=exc.reference) from exc
            raise
        points = points_of(text)
        log.info("summarised", extra={"session": where.session_key, "user": user.id, "messages": len(said),
                                      "parts": parts, "model_calls": summariser.calls, "points": len(points)})
        return Summary(points=points, messages=len(said), speakers=speakers_of(said), parts=parts,
                       model_calls=summariser.calls)
