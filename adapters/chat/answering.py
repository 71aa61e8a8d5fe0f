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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from adapters.chat.feedback import FeedbackTag, register_answer
from adapters.chat.markup import Markup, final_text, queued_text
from engine.errors import ErrorCode, ParleyError
from engine.types import AnswerDone, AnswerEvent, AnswerFailed, ChatRequest, Queued, Reading, TextDelta

if TYPE_CHECKING:  # the engine object is handed in; importing it would pull the model code into the adapters
    from engine.core import Engine

log = logging.getLogger(__name__)

PEEK_S = 0.4  # how long to wait for the engine's first event before showing a placeholder
# Failures that come before any answer text and concern only the asker: shown to them alone
# where the platform can (Slack's ephemeral messages).
PRIVATE_CODES = {ErrorCode.RATE_LIMITED, ErrorCode.QUEUE_FULL, ErrorCode.OVERLOADED, ErrorCode.MODEL_NOT_READY,
                 ErrorCode.SHUTTING_DOWN, ErrorCode.INVALID_REQUEST, ErrorCode.CONTEXT_TOO_LONG}

Private = Callable[[str], Awaitable[None]]  # tells only the asker


@dataclass(frozen=True)
class Progress:
    """Where an answer stands before its first words, for a platform's own status indicator
    (Slack's "is thinking…" under the thread): thinking, reading documents, or queued."""

    kind: str  # "thinking" | "reading" | "queued" | "idle" (clears it: a refusal, nothing follows)
    files: tuple[str, ...] = ()
    ahead: int = 0

    def words(self) -> str:
        """"is thinking…", "is reading report.pdf…", "is queued, 2 ahead…"."""
        if self.kind == "reading":
            names = ", ".join(self.files[:2]) + (f" and {len(self.files) - 2} more" if len(self.files) > 2 else "")
            return f"is reading {names}…"
        if self.kind == "queued":
            return f"is queued, {self.ahead} ahead…" if self.ahead else "is queued, next in line…"
        if self.kind == "idle":
            return ""
        return "is thinking…"


OnProgress = Callable[[Progress], Awaitable[None]]


class Reply(Protocol):
    """What an answer is shown in: adapters.chat.streaming.StreamingReply (edited messages),
    adapters.slack.native_stream.NativeStreamingReply, or the console's."""

    @property
    def raw(self) -> str:
        """The answer text so far, as the model wrote it."""

    @property
    def opened(self) -> bool:
        """Whether anything (a placeholder, the first words) is shown yet."""

    @property
    def messages(self) -> int:
        """How many messages show the answer now (for the log)."""

    @property
    def edits(self) -> int:
        """How many edits showing it has cost so far (for the log)."""

    async def open(self, text: str) -> None: ...

    async def status(self, text: str) -> None: ...

    async def append(self, delta: str) -> None: ...

    async def final_markup(self, markup: Markup) -> Markup:
        """The markup to write the final text in: `markup` (the platform's) unless the reply writes
        another way, decided by then (Slack: Markdown when streaming natively, mrkdwn when editing)."""

    async def finish(self, final_text: str, feedback: FeedbackTag | None = None) -> None:
        """Show the final text; `feedback` puts the 👍 / 👎 buttons on its last message."""

    async def replace(self, text: str) -> None: ...

    async def discard(self) -> None: ...


@dataclass
class _Showing:
    """What stream_answer hands _show: the reply, its markup and the optional platform hooks."""

    reply: Reply
    markup: Markup
    private: Private | None
    session: str
    progress: OnProgress | None
    feedback: Callable[[AnswerDone], Awaitable[FeedbackTag | None]] | None


async def stream_answer(engine: Engine, request: ChatRequest, reply: Reply, markup: Markup,
                        private: Private | None = None, *, progress: OnProgress | None = None,
                        feedback: bool = False) -> None:
    """Answer `request` into `reply`; never raises but for cancellation. `progress` is told where
    the answer stands until its first words; with `feedback`, the finished answer is put on
    record and its last message carries the 👍 / 👎 buttons."""
    session = request.where.session_key
    showing = _Showing(reply, markup, private, session, progress,
                       (lambda done: register_answer(engine, request, done)) if feedback else None)
    events = engine.answer(request)
    first = asyncio.ensure_future(events.__anext__())
    log.info("answering", extra={"session": session, "user": request.user.id, "message_id": request.message_id})
    try:
        await _progress(showing, Progress("thinking"))
        done, _ = await asyncio.wait({first}, timeout=PEEK_S)
        if not done:
            await reply.open(markup.status.format("Thinking…"))
        event = await first
        while not await _show(event, showing):
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


async def _progress(showing: _Showing, progress: Progress) -> None:
    """Best effort: a status indicator that fails must not fail the answer."""
    if showing.progress is None or showing.reply.raw:
        return
    try:
        await showing.progress(progress)
    except Exception:  # noqa: BLE001
        log.warning("status indicator failed", extra={"session": showing.session, "kind": progress.kind}, exc_info=True)


async def _show(event: AnswerEvent, showing: _Showing) -> bool:
    """Show one engine event; True when the answer is over."""
    reply = showing.reply
    markup = showing.markup
    if isinstance(event, TextDelta):
        await reply.append(event.text)
    elif isinstance(event, Queued):
        await _progress(showing, Progress("queued", ahead=event.ahead))
        await reply.status(queued_text(event.ahead, markup))
    elif isinstance(event, Reading):
        await _progress(showing, Progress("reading", files=event.files))
    elif isinstance(event, AnswerDone):
        tag = await showing.feedback(event) if showing.feedback is not None else None
        await reply.finish(final_text(event, await reply.final_markup(markup)), feedback=tag)
        log.info("answered", extra={"session": showing.session, "tokens": event.completion_tokens,
                                    "messages": reply.messages, "edits": reply.edits})
        return True
    elif isinstance(event, AnswerFailed):
        await _progress(showing, Progress("idle"))
        if event.silent:  # a repeat refusal in a cool-down: no reply spam
            await reply.discard()
        elif showing.private is not None and event.code in PRIVATE_CODES and not reply.raw:
            await reply.discard()
            await showing.private(markup.warning + markup.guard(event.render()))
        else:  # a failure may quote the asker's words: the platform's rule applies to it as well
            await reply.replace(markup.warning + markup.guard(event.render()))
        return True
    return False
