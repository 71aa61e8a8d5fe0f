"""Answering, written once for every platform: from a ChatRequest to the messages a user sees.

`stream_answer` asks the engine, shows a placeholder when the first words are slow to come,
streams the text within the platform's edit budget, finishes with the final text and its
sources (split over several messages when long), and turns every failure into the same short
reply with its code and reference.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from adapters.chat.markup import Markup, final_text, queued_text
from engine.errors import ErrorCode, ParleyError
from engine.types import AnswerDone, AnswerEvent, AnswerFailed, ChatRequest, Queued, TextDelta

if TYPE_CHECKING:  # the engine object is handed in; importing it would pull the model code into the adapters
    from engine.core import Engine

log = logging.getLogger(__name__)

PEEK_S = 0.4  # how long to wait for the engine's first event before showing a placeholder
# Failures that come before any answer text and concern only the asker: shown to them alone
# where the platform can (Slack's ephemeral messages).
PRIVATE_CODES = {ErrorCode.RATE_LIMITED, ErrorCode.QUEUE_FULL, ErrorCode.OVERLOADED, ErrorCode.MODEL_NOT_READY,
                 ErrorCode.SHUTTING_DOWN, ErrorCode.INVALID_REQUEST, ErrorCode.CONTEXT_TOO_LONG}

Private = Callable[[str], Awaitable[None]]  # tells only the asker


class Reply(Protocol):
    """What an answer is shown in: adapters.chat.streaming.StreamingReply, or the console's."""

    raw: str

    @property
    def opened(self) -> bool: ...

    async def open(self, text: str) -> None: ...

    async def status(self, text: str) -> None: ...

    async def append(self, delta: str) -> None: ...

    async def finish(self, final_text: str) -> None: ...

    async def replace(self, text: str) -> None: ...

    async def discard(self) -> None: ...


async def stream_answer(engine: Engine, request: ChatRequest, reply: Reply, markup: Markup,
                        private: Private | None = None) -> None:
    """Answer `request` into `reply`; never raises but for cancellation."""
    session = request.where.session_key
    events = engine.answer(request)
    first = asyncio.ensure_future(events.__anext__())
    log.info("answering", extra={"session": session, "user": request.user.id, "message_id": request.message_id})
    try:
        done, _ = await asyncio.wait({first}, timeout=PEEK_S)
        if not done:
            await reply.open(markup.status.format("Thinking…"))
        event = await first
        while not await _show(event, reply, markup, private, session):
            event = await events.__anext__()
    except StopAsyncIteration:
        log.error("the answer stream ended without a result", extra={"session": session})
    except asyncio.CancelledError:
        if reply.opened:  # shutting down mid-answer: say so rather than leave a frozen message
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reply.replace(markup.warning + ParleyError(ErrorCode.SHUTTING_DOWN).render()), 3)
        raise
    except Exception as exc:  # noqa: BLE001 - a platform failure must not go unexplained
        error = ParleyError(ErrorCode.INTERNAL)
        log.error("reply failed", extra={"ref": error.reference, "session": session}, exc_info=exc)
        with contextlib.suppress(Exception):
            await reply.replace(markup.warning + error.render())
    finally:
        if not first.done():
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
        await events.aclose()


async def _show(event: AnswerEvent, reply: Reply, markup: Markup, private: Private | None, session: str) -> bool:
    """Show one engine event; True when the answer is over."""
    if isinstance(event, TextDelta):
        await reply.append(event.text)
    elif isinstance(event, Queued):
        await reply.status(queued_text(event.ahead, markup))
    elif isinstance(event, AnswerDone):
        await reply.finish(final_text(event, markup))
        log.info("answered", extra={"session": session, "tokens": event.completion_tokens,
                                    "messages": len(getattr(reply, "handles", ())), "edits": getattr(reply, "edits", 0)})
        return True
    elif isinstance(event, AnswerFailed):
        if event.silent:  # a repeat refusal in a cool-down: no reply spam
            await reply.discard()
        elif private is not None and event.code in PRIVATE_CODES and not reply.raw:
            await reply.discard()
            await private(markup.warning + event.render())
        else:
            await reply.replace(markup.warning + event.render())
        return True
    return False
