"""`POST /v1/chat/completions`: OpenAI's chat completions, streamed (server-sent events) or whole.

Stateless like OpenAI's: the request's messages and sampling settings run on the model
(engine/completions.py), with the documents of `parley.scope` when it names one the key may read.
With `parley.session` the request continues a stored conversation instead, the way a chat thread
does (Engine.answer: the session's history, the channel's settings; the last user message is
the new one). A failure before the first words is an HTTP error; one after them, an error event.
"""
from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.http_api.context import caller_of, engine_of
from adapters.http_api.errors import bad_request, failure_body, failure_response, forbidden
from adapters.http_api.identity import Caller
from adapters.http_api.shapes import Completion
from engine.completions import CompletionRequest
from engine.types import AnswerDone, AnswerEvent, AnswerFailed, ChatRequest, TextDelta

if TYPE_CHECKING:
    from engine.core import Engine

MOST_STOPS = 4
SESSION_CHARS = 128


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    return body


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or not math.isfinite(value):
        raise bad_request(f"`{name}` must be a number from {low:g} to {high:g}.", name)
    return float(value)


def _integer(body: dict, name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_request(f"`{name}` must be an integer of at least {low}.", name)
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else [] if stop is None else None
    if stops is None or len(stops) > MOST_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise bad_request(f"`stop` must be a string or a list of up to {MOST_STOPS} strings.", "stop")
    return tuple(stops)


def completion_request(body: dict, caller: Caller, completion: Completion) -> CompletionRequest:
    """The body's messages and settings as the Engine takes them; 400 naming a bad field."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty list.", "messages")
    if body.get("n") not in (None, 1):
        raise bad_request("Only `n: 1` is served.", "n")
    extension = _extension(body)
    channel, workspace_wide = caller.own_channel, False
    documents = None
    if extension.get("scope") is not None:
        channel, workspace_wide = caller.readable(extension["scope"])
        documents = caller.conversation(channel)
    return CompletionRequest(
        where=caller.conversation(channel, completion.id), user=caller.user, messages=tuple(messages),
        model=completion.model, temperature=_number(body, "temperature", 0.0, 2.0), top_p=_number(body, "top_p", 0.0, 1.0),
        max_tokens=_integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1), stop=_stops(body),
        seed=_integer(body, "seed", -2**63), min_tokens=_integer(body, "min_tokens", 0) or 0,
        documents=documents, workspace_wide=workspace_wide)


def _extension(body: dict) -> dict:
    extension = body.get("parley") or {}
    if not isinstance(extension, dict):
        raise bad_request("`parley` must be an object (`scope`, `session`).", "parley")
    return extension


def session_request(body: dict, caller: Caller, session: Any) -> ChatRequest:
    """A message continuing the stored conversation `session` (the key's own, in its scope's channel)."""
    if not isinstance(session, str) or not 0 < len(session) <= SESSION_CHARS:
        raise bad_request(f"`parley.session` must be an id of 1 to {SESSION_CHARS} characters.", "parley.session")
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), str):
        raise bad_request("A session continues with one new user message: the last of `messages`.", "messages")
    scope = _extension(body).get("scope")
    channel = caller.own_channel
    if scope is not None:
        channel, workspace_wide = caller.readable(scope)
        if workspace_wide:
            raise bad_request("A session reads one channel's documents: `channel:NAME`.", "parley.scope")
    return ChatRequest(where=caller.conversation(channel, f"{caller.identity.name}:{session}"), user=caller.user,
                       text=last["content"])


async def _reads_only_allowed(engine: Engine, request: ChatRequest, caller: Caller) -> None:
    """A session answers from its channel's scope as the channel's settings say: refused when they
    widen it to the workspace (config knowledge.workspace_scope) and the key may not read that."""
    if (await engine.channel_settings(request.where)).scope == "workspace" and not caller.identity.may_read("workspace"):
        raise forbidden("This key may not read the documents of workspace, which this workspace's sessions read.",
                        "parley.session")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    caller = caller_of(request)
    body = await read_json(request)
    model = body.get("model") or ""
    if not isinstance(model, str):
        raise bad_request("`model` must be a string.", "model")
    session = _extension(body).get("session")
    completion = Completion(model=model or engine.live_model or "", session=session if isinstance(session, str) else "")
    if session is not None:
        chat = session_request(body, caller, session)
        await _reads_only_allowed(engine, chat, caller)
        events = engine.answer(chat)
    else:
        events = engine.api.complete(completion_request(body, caller, completion))
    async with contextlib.aclosing(events):  # a client gone or a cancelled handler cancels the generation
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return await _stream(request, events, completion, bool(options.get("include_usage")))
        return await _whole(events, completion)


async def _whole(events: AsyncIterator[AnswerEvent], completion: Completion) -> web.Response:
    async for event in events:
        if isinstance(event, AnswerFailed):
            return failure_response(event)
        if isinstance(event, AnswerDone):
            return web.json_response(completion.whole(event))
    raise RuntimeError("the answer ended without a result")


async def _send(response: web.StreamResponse, payload: dict) -> None:
    await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")


async def _open(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    return response


async def _stream(request: web.Request, events: AsyncIterator[AnswerEvent], completion: Completion,
                  include_usage: bool) -> web.StreamResponse:
    """Server-sent events: the answer's pieces, its end with the usage, its sources, `[DONE]`."""
    response: web.StreamResponse | None = None
    async for event in events:
        if isinstance(event, AnswerFailed):
            if response is None:
                return failure_response(event)  # nothing said yet: a plain HTTP error
            await _send(response, failure_body(event))
            break
        if isinstance(event, TextDelta):
            delta = {"content": event.text} if response is not None else {"role": "assistant", "content": event.text}
            response = response or await _open(request)
            await _send(response, completion.chunk(delta))
        elif isinstance(event, AnswerDone):
            response = response or await _open(request)
            await _send(response, completion.last_chunk(event))
            if event.sources or completion.session:
                await _send(response, completion.sources_chunk(event))
            if include_usage:
                await _send(response, completion.usage_chunk(event))
            break
    if response is None:
        raise RuntimeError("the answer ended without a result")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
