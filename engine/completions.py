"""OpenAI-style completions and embeddings, for the HTTP API (adapters/http_api).

A completion is the caller's own messages and sampling settings run on a configured model, through
the same admission (memory, rate limits), scheduler, statistics and failure accounting as a chat
answer; optionally with passages from the documents of one scope (the caller's authentication
decided it may read them), whose sources come back with the answer. No session is kept: the caller
sends the whole conversation each time, as with OpenAI's API (a stored conversation goes through
Engine.answer instead). Embeddings are the knowledge base's own embedder's vectors.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, AsyncIterator

from engine.admission import Admission
from engine.authority import Authority
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.citations import to_sources
from engine.knowledge.retrieval import Retrieval, retrieve
from engine.lineup import ModelLineup
from engine.prompting import MIN_ANSWER_TOKENS
from engine.runtime.generation import GenerationStream, GenFinished, GenQueued, GenText, SamplingParams
from engine.stats import EngineStats
from engine.types import AnswerDone, AnswerEvent, AnswerFailed, Conversation, Queued, Reading, TextDelta, User

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase
    from engine.runtime.backends import Backend

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
MOST_EMBEDDING_INPUTS = 256


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """One OpenAI-style completion: `messages` are {"role", "content"} dicts, oldest first.

    where/user: who asks and where their usage counts (the HTTP API's key: its workspace);
    documents: the scope whose documents the answer may use (None: none), workspace_wide: all of
    its workspace's shared documents. Unset sampling settings take the model's defaults.
    """

    where: Conversation
    user: User
    messages: tuple[dict, ...]
    model: str = ""  # "" = the live model
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    min_tokens: int = 0  # the model's end of text is ignored until this many tokens (vLLM's min_tokens)
    documents: Conversation | None = None
    workspace_wide: bool = False


class StopScanner:
    """Cuts streamed text at the first of the caller's stop strings; text that may be the start of
    one is held back until the next piece says whether it is."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held) that is surely answer text."""
        if not self._stops or self.stopped:
            return "" if self.stopped else text
        buffer = self._held + text
        found = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return buffer[:min(found)]
        keep = self._partial(buffer)
        self._held = buffer[len(buffer) - keep:]
        return buffer[:len(buffer) - keep]

    def _partial(self, buffer: str) -> int:
        """The length of the longest end of `buffer` that begins a stop string."""
        for size in range(min(len(buffer), max(map(len, self._stops)) - 1), 0, -1):
            if any(s.startswith(buffer[-size:]) for s in self._stops):
                return size
        return 0

    def flush(self) -> str:
        held = self._held
        self._held = ""
        return held


def _user_key(request: CompletionRequest) -> str:
    return f"{request.where.platform}/{request.where.workspace}/{request.user.id}"


def _prompt_tokens(prompt: object, messages: list[dict], count_tokens: Callable[[str], int]) -> int:
    """The prompt's length in tokens: a local backend's token ids, else the messages counted."""
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return sum(count_tokens(m["content"]) + 6 for m in messages)


@dataclasses.dataclass
class _Prepared:
    backend: Backend
    prompt: object
    params: SamplingParams
    passages: list
    prompt_tokens: int


class Completions:
    """Completions and embeddings for the HTTP API, on the engine's parts (never the Engine)."""

    def __init__(self, *, lineup: ModelLineup, admission: Admission, authority: Authority, stats: EngineStats,
                 knowledge: Callable[[], KnowledgeBase | None], state: Callable[[], str], context_tokens: int):
        self._lineup = lineup
        self._admission = admission
        self._authority = authority
        self._stats = stats
        self._knowledge = knowledge  # opened at start
        self._state = state
        self._context_tokens = context_tokens

    async def complete(self, request: CompletionRequest) -> AsyncIterator[AnswerEvent]:
        """Reading?, Queued*, TextDelta*, then AnswerDone or AnswerFailed; closing it cancels."""
        self._stats.record_request()
        self._stats.record_question(_user_key(request))
        started = time.perf_counter()
        submitted = await self._admission.admitted(request.where, request.user, lambda: self._submit(request),
                                                   action="complete", args=(request.where, request.user))
        if isinstance(submitted, AnswerFailed):
            yield submitted
            return
        prepared, handle = submitted
        if prepared.passages:
            yield Reading(tuple(dict.fromkeys(p.file for p in prepared.passages)))
        async with contextlib.aclosing(self._generate(request, prepared, handle, started)) as events:
            async for event in events:
                yield event

    async def _generate(self, request: CompletionRequest, prepared: _Prepared, handle: GenerationStream,
                        started: float) -> AsyncIterator[AnswerEvent]:
        scanner = StopScanner(request.stop)
        parts: list[str] = []
        finished: GenFinished | None = None
        first_token_at: float | None = None
        try:
            async for event in handle:
                if isinstance(event, GenText):
                    first_token_at = first_token_at or time.perf_counter() - started
                    text = scanner.feed(event.text)
                    if text:
                        parts.append(text)
                        yield TextDelta(text)
                    if scanner.stopped:
                        handle.cancel()  # the caller's stop string: its end is the answer's
                elif isinstance(event, GenQueued):
                    yield Queued(event.ahead)
                elif isinstance(event, GenFinished):
                    finished = event
        except ParleyError as exc:
            yield self._failure(exc, request)
            return
        except Exception as exc:  # noqa: BLE001
            yield self._failure(ParleyError(ErrorCode.GENERATION_FAILED), request, exc)
            return
        finally:
            if finished is None:
                handle.cancel()  # the caller went away, or the task was cancelled
        tail = scanner.flush()
        if tail:
            parts.append(tail)
            yield TextDelta(tail)
        reason = "stop" if scanner.stopped else finished.reason
        self._stats.record_answer(prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens,
                                  first_token_s=first_token_at, total_s=time.perf_counter() - started,
                                  cancelled=reason == "cancelled")
        self._stats.record_user_tokens(_user_key(request), finished.prompt_tokens + finished.completion_tokens)
        yield AnswerDone(text="".join(parts), finish_reason=reason, prompt_tokens=finished.prompt_tokens,
                         completion_tokens=finished.completion_tokens, sources=to_sources(prepared.passages),
                         model=prepared.backend.config.name, latency_s=time.perf_counter() - started)

    async def _submit(self, request: CompletionRequest) -> tuple[_Prepared, GenerationStream]:
        prepared = await self._prepare(request)
        return prepared, prepared.backend.submit(prepared.prompt, prepared.params)

    def _failure(self, exc: ParleyError, request: CompletionRequest, cause: BaseException | None = None) -> AnswerFailed:
        """Counted and logged once, with the reference the caller sees (engine/admission.py)."""
        return self._admission.failure(exc, cause=cause, action="complete", args=(request.where, request.user))

    async def _backend(self, request: CompletionRequest) -> Backend:
        """The model asked for: the live one unless named; another is loaded only for an operator."""
        live = self._lineup.live_model
        name = request.model or live or ""
        if name != live:
            self._lineup.check_name(name)
            await self._authority.require("load_model", request.where, request.user, target=name)
        return await self._lineup.backend_for(name)

    def _ready(self) -> None:
        state = self._state()
        if state != "ready":
            raise ParleyError(ErrorCode.MODEL_NOT_READY if state == "new" else ErrorCode.SHUTTING_DOWN)

    async def _prepare(self, request: CompletionRequest) -> _Prepared:
        self._ready()
        messages = _checked(request.messages)
        backend = await self._backend(request)
        found = await self._retrieve(request, messages, backend)
        if found.block:
            messages = _with_context(messages, found.block)
        prompt = await asyncio.to_thread(backend.encode_chat, messages)
        tokens = await asyncio.to_thread(_prompt_tokens, prompt, messages, backend.count_tokens)
        window = backend.config.context_window
        if tokens + MIN_ANSWER_TOKENS > window:
            raise ParleyError(ErrorCode.CONTEXT_TOO_LONG,
                              f"The messages are {tokens} tokens; the model's context window is {window} "
                              f"and leaves at least {MIN_ANSWER_TOKENS} for the answer. Send fewer or shorter messages.")
        generation = backend.config.generation
        overrides = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p),
                                       ("seed", request.seed)) if v is not None}
        most = min(request.max_tokens or generation.max_new_tokens, window - tokens)
        params = SamplingParams.from_defaults(generation, max_new_tokens=most, min_new_tokens=min(request.min_tokens, most),
                                              **overrides)
        return _Prepared(backend, prompt, params, found.passages, tokens)

    async def _retrieve(self, request: CompletionRequest, messages: list[dict], backend: Backend) -> Retrieval:
        knowledge = self._knowledge()
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if request.documents is None or knowledge is None or not question.strip():
            return Retrieval()
        found = await retrieve(knowledge, request.documents, question, count_tokens=backend.count_tokens,
                               budget_tokens=self._context_tokens, workspace_wide=request.workspace_wide)
        return Retrieval(found.block, found.passages)  # nothing found: the model answers plainly

    # ---- embeddings --------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], where: Conversation, user: User) -> list[list[float]]:
        """The packaged embedder's unit vectors of `texts`, admitted and counted like a question."""
        knowledge = self._knowledge()
        try:
            self._ready()
            if knowledge is None:
                raise ParleyError(ErrorCode.INVALID_REQUEST, "Embeddings need the knowledge base (knowledge.enabled).")
            if not texts or len(texts) > MOST_EMBEDDING_INPUTS or not all(isinstance(t, str) and t for t in texts):
                raise ParleyError(ErrorCode.INVALID_REQUEST,
                                  f"`input` must be 1 to {MOST_EMBEDDING_INPUTS} non-empty strings.")
            await self._admission.admit(where, user, "answer")
        except ParleyError as exc:
            self._admission.failure(exc, action="embed", args=(where, user))  # counted and logged once
            raise
        self._stats.record_request()
        vectors = await asyncio.to_thread(lambda: knowledge.embedder.encode(list(texts)))
        return [[float(x) for x in row] for row in vectors]

    def count_embedding_tokens(self, texts: Sequence[str]) -> int:
        """Word pieces in `texts` (the usage an embeddings reply reports)."""
        knowledge = self._knowledge()
        if knowledge is None:
            return 0
        count = knowledge.embedder.count_tokens
        return sum(count(t) for t in texts)


def _checked(messages: Sequence[dict]) -> list[dict]:
    """The messages as the chat template takes them; INVALID_REQUEST naming the first bad one."""
    if not messages:
        raise ParleyError(ErrorCode.INVALID_REQUEST, "`messages` must hold at least one message.")
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # OpenAI's content parts: the text ones are read
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        role = m.get("role") if isinstance(m, dict) else None
        if role == "developer":
            role = "system"
        if role not in ROLES or not isinstance(content, str):
            raise ParleyError(ErrorCode.INVALID_REQUEST,
                              f"messages[{i}] must have a role ({', '.join(ROLES)}) and text content.")
        out.append({"role": role, "content": content})
    return out


def _with_context(messages: list[dict], block: str) -> list[dict]:
    """The passages' block joined to the system message (one is added when there is none)."""
    if messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
