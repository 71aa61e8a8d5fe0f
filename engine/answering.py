"""The answer pipeline: from a ChatRequest to a stream of answer events.

Admit the request (memory, rate limits), plan its prompt (the thread's history and settings,
passages retrieved from the channel's documents), generate on the backend of the thread's
model, and remember the turn in the thread's session. Engine.answer wraps it; the pipeline gets
the parts it uses (sessions, settings, the model lineup, the knowledge base, admission, stats).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, AsyncIterator

from engine.admission import Admission
from engine.channels import SETTING_HELP, ChannelSettings
from engine.errors import ErrorCode, ParleyError
from engine.runtime.generation import GenerationHandle, GenFinished, GenQueued, GenText, SamplingParams
from engine.knowledge.citations import to_sources
from engine.knowledge.retrieval import Retrieval, retrieve, topic_of
from engine.lineup import ModelLineup
from engine.prompting import plan_prompt
from engine.sessions import NOTHING_FOLDED, SessionStore, Turn, missed_turns
from engine.stats import EngineStats
from engine.types import (
    AnswerDone, AnswerEvent, AnswerFailed, ChatRequest, Conversation, Queued, Reading, Source, TextDelta,
)
from engine.vision import picture_tokens, with_picture_parts

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase
    from engine.runtime.backends import Backend

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
    """A request made ready for the model: its prompt and settings, or a direct reply."""

    backend: Backend
    prompt: list
    params: SamplingParams | None
    passages: list  # the retrieved passages in the prompt (engine.knowledge.Passage)
    dropped: int
    settings: dict
    reply: str | None = None
    missed: tuple = ()  # the thread's messages the session had not seen (engine.sessions.Turn), kept with this turn
    quoting: asyncio.Task | None = None  # picks each passage's excerpt while the answer is written


SettingsLookup = Callable[[Conversation], Awaitable[ChannelSettings]]  # a channel's effective settings


def user_key(request: ChatRequest) -> str:
    """Whose usage a request counts as: one person in one workspace."""
    return f"{request.where.platform}/{request.where.workspace}/{request.user.id}"


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Token budgets of a prompt: the thread's history, and the passages from the documents."""

    history_tokens: int
    context_tokens: int


class AnswerPipeline:
    def __init__(self, *, sessions: SessionStore, settings: SettingsLookup, lineup: ModelLineup,
                 knowledge: KnowledgeBase | None, admission: Admission, stats: EngineStats,
                 budgets: Budgets, state: Callable[[], str]):
        self._sessions = sessions
        self._settings = settings
        self._lineup = lineup
        self._knowledge = knowledge
        self._admission = admission
        self._stats = stats
        self._budgets = budgets
        self._state = state  # the engine's: new -> ready -> stopping -> stopped

    async def run(self, request: ChatRequest) -> AsyncIterator[AnswerEvent]:
        """Queued*, TextDelta*, then AnswerDone or AnswerFailed (see Engine.answer)."""
        self._stats.record_request()
        self._stats.record_question(user_key(request))
        started = time.perf_counter()
        submitted = await self._admission.admitted(request.where, request.user, lambda: self._submit(request),
                                                   args=(request,))
        if isinstance(submitted, AnswerFailed):
            yield submitted
            return
        prepared, handle = submitted

        if prepared.reply is not None:  # answered without the model (e.g. nothing in the documents)
            yield TextDelta(prepared.reply)
            await self._remember(request, prepared.reply, prepared)
            yield AnswerDone(text=prepared.reply, finish_reason="not_found", prompt_tokens=0,
                             completion_tokens=0, history_dropped=prepared.dropped,
                             model=prepared.backend.config.name, latency_s=time.perf_counter() - started)
            return
        async with contextlib.aclosing(self._generate(request, prepared, handle, started)) as events:
            async for event in events:  # closing `run` closes this too: the generation is cancelled at once
                yield event

    async def _generate(self, request: ChatRequest, prepared: Prepared, handle: GenerationHandle,
                        started: float) -> AsyncIterator[AnswerEvent]:
        """The model's answer: Reading?, Queued*, TextDelta*, then AnswerDone or AnswerFailed."""
        if prepared.passages:  # the model reads these first: a platform can say so while it waits
            yield Reading(tuple(dict.fromkeys(p.file for p in prepared.passages)))

        if prepared.passages and self._knowledge is not None:
            prepared.quoting = asyncio.create_task(self._knowledge.quote(topic_of(request.text), prepared.passages))
        parts: list[str] = []
        finished: GenFinished | None = None
        first_token_at: float | None = None
        try:
            async for event in handle:
                if isinstance(event, GenText):
                    if first_token_at is None:
                        first_token_at = time.perf_counter() - started
                    parts.append(event.text)
                    yield TextDelta(event.text)
                elif isinstance(event, GenQueued):
                    yield Queued(event.ahead)
                elif isinstance(event, GenFinished):
                    finished = event
        except ParleyError as exc:
            yield self._admission.failure(exc, request)
            return
        except Exception as exc:  # noqa: BLE001
            yield self._admission.failure(ParleyError(ErrorCode.GENERATION_FAILED), request, exc)
            return
        finally:
            if finished is None:
                handle.cancel()  # the consumer went away, or the task was cancelled
                if prepared.quoting is not None:
                    prepared.quoting.cancel()

        text = "".join(parts).strip()
        cancelled = finished.reason == "cancelled"
        self._stats.record_answer(
            prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens,
            first_token_s=first_token_at, total_s=time.perf_counter() - started, cancelled=cancelled)
        self._stats.record_user_tokens(user_key(request), finished.prompt_tokens + finished.completion_tokens)
        if text:
            await self._remember(request, text, prepared)
        yield AnswerDone(text=text, finish_reason=finished.reason, prompt_tokens=finished.prompt_tokens,
                         completion_tokens=finished.completion_tokens, sources=await self._sources(request, prepared),
                         history_dropped=prepared.dropped, model=prepared.backend.config.name,
                         latency_s=time.perf_counter() - started)

    async def _submit(self, request: ChatRequest) -> tuple[Prepared, GenerationHandle | None]:
        """Plan the request and hand it to its model's backend (no handle: answered without it)."""
        for attempt in range(2):
            prepared = await self._prepare(request)
            if prepared.reply is not None:
                return prepared, None
            try:
                return prepared, prepared.backend.submit(prepared.prompt, prepared.params)
            except ParleyError as exc:
                # A model switch retired this backend between planning and submitting: replan.
                if exc.code is not ErrorCode.SHUTTING_DOWN or attempt or not self._lineup.is_retired(prepared.backend):
                    raise
        raise AssertionError("unreachable")

    async def _prepare(self, request: ChatRequest) -> Prepared:
        state = self._state()
        if state != "ready":
            raise ParleyError(ErrorCode.MODEL_NOT_READY if state == "new" else ErrorCode.SHUTTING_DOWN)
        text = request.text.strip()
        if not text:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "Ask me something: the message was empty.")
        session = await asyncio.to_thread(self._sessions.get, request.where.session_key)
        missed = missed_turns(session.turns if session else (), request.earlier, time.time())
        history = (session.turns if session else ()) + missed
        if missed:
            log.info("thread messages joined", extra={"session": request.where.session_key, "messages": len(missed)})
        # A thread keeps the settings it started with, so an edit never changes a conversation midway.
        settings = dict(session.settings) if session and session.settings else \
            (await self._settings(request.where)).as_dict()
        backend = await self._lineup.backend_for(settings["model"])
        # A model with vision sees this turn's pictures; any other reads their OCR text, in request.text
        pictures = request.pictures if backend.config.vision else ()
        found = Retrieval()
        if self._knowledge is not None:
            scope = settings["scope"] if request.documents is None else \
                (await self._settings(request.documents)).scope  # the viewed channel's own scope
            found = await retrieve(self._knowledge, request.scope, request.text, count_tokens=backend.count_tokens,
                                   budget_tokens=self._budgets.context_tokens,
                                   workspace_wide=scope == "workspace")
        if found.not_found:
            return Prepared(backend, [], None, [], 0, settings, reply=found.not_found, missed=missed)
        generation = backend.config.generation
        effective = ChannelSettings(**{k: settings[k] for k in SETTING_HELP})
        max_new_tokens = effective.max_new_tokens(generation.max_new_tokens, backend.config.context_window)

        def plan():
            p = plan_prompt(
                system_prompt=settings["prompt"], history=history, message=text,
                count_tokens=backend.count_tokens, history_budget=self._budgets.history_tokens,
                context_window=backend.config.context_window, max_new_tokens=max_new_tokens,
                context_block=found.block, speaker=request.user.name, speaker_id=request.user.id,
                earlier=session.folded if session else NOTHING_FOLDED,
                extra_tokens=sum(picture_tokens(picture) for picture in pictures))
            return p, backend.encode_chat(with_picture_parts(p.messages, pictures))

        plan_, prompt = await asyncio.to_thread(plan)
        if pictures:
            log.info("pictures for the model", extra={"session": request.where.session_key, "pictures": len(pictures),
                                                      "bytes": sum(len(picture.data) for picture in pictures)})
        if plan_.history_dropped:
            log.info("history trimmed", extra={"session": request.where.session_key,
                                               "dropped": plan_.history_dropped, "kept": plan_.history_kept})
        params = SamplingParams.from_defaults(generation, max_new_tokens=max_new_tokens)
        return Prepared(backend, prompt, params, found.passages, plan_.history_dropped, settings, missed=missed)

    async def _sources(self, request: ChatRequest, prepared: Prepared) -> tuple[Source, ...]:
        """The answer's sources, with the excerpts picked while it was written (plain ones if that failed)."""
        passages = prepared.passages
        if prepared.quoting is not None:
            try:
                passages = await prepared.quoting
            except Exception:  # noqa: BLE001 - the answer stands; its excerpts fall back to each passage's start
                log.warning("excerpts unavailable", extra={"session": request.where.session_key}, exc_info=True)
        return to_sources(passages)

    async def _remember(self, request: ChatRequest, answer: str, prepared: Prepared) -> None:
        now = time.time()
        await asyncio.to_thread(
            functools.partial(self._sessions.append, request.where.session_key, *prepared.missed,
                              Turn("user", request.text.strip(), request.user.id, now,
                                   user_name=request.user.name, message_id=request.message_id),
                              Turn("assistant", answer, "", now), settings=prepared.settings))
