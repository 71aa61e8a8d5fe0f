"""Streaming an answer into editable chat messages: platform-neutral, shared by the adapters.

A chat platform gives us "post a message" and "edit a message", each a network call that is
rate-limited, and a maximum message length. `StreamingReply` turns a stream of text deltas
into at most one edit per interval, continues in a further message when the text outgrows one,
and at the end lays the final text out over as many messages as it needs. `split_message`
cuts text on paragraph, then line, then sentence, then word boundaries and keeps ``` code
fences balanced in every part.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Awaitable, Callable, Protocol

from adapters.chat.feedback import FeedbackTag
from adapters.chat.markup import Markup

log = logging.getLogger(__name__)

FENCE = "```"
_SENTENCE_END = re.compile(r"[.!?:;][)\"'”’]?\s")


def _cut_point(window: str, soft: int) -> int:
    """Where to cut `window` (a prefix of the text at the size limit): the last good boundary
    at or after `soft` characters, else a hard cut at the end of the window."""
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep, soft)
        if at >= soft:
            return at
    ends = [m.end() for m in _SENTENCE_END.finditer(window, soft)]
    if ends:
        return ends[-1]
    at = window.rfind(" ", soft)
    if at >= soft:
        return at
    return len(window)


def split_message(text: str, limit: int, soft: int | None = None) -> list[str]:
    """Split `text` into parts of at most `limit` characters.

    Parts are cut at the last paragraph break after `soft` characters (default: 3/4 of the
    limit), else the last line break, sentence end or space, else hard. A part that would end
    inside a ``` block is closed and the next part reopens it, so code renders in each.
    """
    if limit < 16:
        raise ValueError("limit too small")
    soft = int(limit * 0.75) if soft is None else max(1, min(soft, limit - 8))
    room = limit - len(FENCE) - 1  # keep space to close a fence
    parts: list[str] = []
    rest = text.strip("\n")
    reopen = ""
    while rest:
        rest = reopen + rest
        reopen = ""
        if len(rest) <= limit and rest.count(FENCE) % 2 == 0:
            parts.append(rest)
            break
        if len(rest) <= limit:
            window = rest
            cut = len(rest)
        else:
            window = rest[:room]
            cut = _cut_point(window, min(soft, room - 1))
        part = rest[:cut].rstrip()
        rest = rest[cut:].lstrip("\n ")
        if part.count(FENCE) % 2:
            part += "\n" + FENCE
            reopen = FENCE + "\n"
        if part.strip():
            parts.append(part)
        if not rest.strip():
            break
    return parts or [""]


class EditBudget:
    """A token bucket shared by every reply streaming at once into one workspace (or guild):
    platforms limit edits per app, not per message, so sixteen answers streaming together must
    not each edit once a second. Interim edits that find the bucket empty are skipped (the next
    one shows the text so far); final edits always go and only drain it. With Redis, Slack's is
    one bucket per workspace for every replica (adapters/chat/edit_budget.py)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now

    async def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def take(self) -> None:
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)


class Allowance(Protocol):
    """An edit budget: EditBudget (this process's) or adapters.chat.edit_budget.SharedEditBudget."""

    async def try_take(self) -> bool: ...

    async def take(self) -> None: ...


class MessageTarget(Protocol):
    """Where messages go: a thread, a channel, a DM. `post` returns a handle for `edit` and `delete`."""

    async def post(self, text: str) -> Any: ...

    async def edit(self, handle: Any, text: str) -> None: ...

    async def delete(self, handle: Any) -> None: ...


class AnswerTarget(MessageTarget, Protocol):
    """Where an answer streams (StreamingReply): a MessageTarget whose post and edit also take
    `feedback`, put on the answer's last message as the 👍 / 👎 buttons (None: no buttons)."""

    async def post(self, text: str, feedback: FeedbackTag | None = None) -> Any: ...

    async def edit(self, handle: Any, text: str, feedback: FeedbackTag | None = None) -> None: ...


class StreamingReply:
    """One answer, shown as it is written.

    open() posts the placeholder, status() changes it while no text has come, append() adds
    answer text and edits at most once per `interval_s`, finish() writes the final text (split
    over several messages when long). `render` turns raw answer text into the platform's markup.
    """

    def __init__(self, target: AnswerTarget, *, interval_s: float, limit: int, soft_limit: int | None = None,
                 render: Callable[[str], str] = lambda s: s, cursor: str = " ▍",
                 clock: Callable[[], float] = time.monotonic, budget: Allowance | None = None):
        self.target = target
        self.interval_s = interval_s
        self.limit = limit
        self.soft_limit = soft_limit
        self.render = render
        self.cursor = cursor
        self.clock = clock
        self.budget = budget
        self.raw = ""  # the answer text so far, as the model wrote it
        self.handles: list[Any] = []  # the messages this reply owns, in order
        self.shown: list[str] = []  # what each of them shows now
        self.edits = 0
        self._last_flush = float("-inf")
        self._backoff_until = float("-inf")

    @property
    def opened(self) -> bool:
        return bool(self.handles)

    @property
    def messages(self) -> int:
        return len(self.handles)

    async def final_markup(self, markup: Markup) -> Markup:
        return markup  # edited messages show the platform's own markup

    async def open(self, text: str) -> None:
        if not self.handles:
            self.handles.append(await self.target.post(text))
            self.shown.append(text)
            self._last_flush = self.clock()

    async def status(self, text: str) -> None:
        """Replace the placeholder text (e.g. the queue position) while no answer text is shown."""
        if not self.handles:
            await self.open(text)
        elif not self.raw and self.shown[0] != text:
            await self._try(self._sync([text]))

    async def append(self, delta: str) -> None:
        self.raw += delta
        now = self.clock()
        if now - self._last_flush >= self.interval_s and now >= self._backoff_until and self.raw.strip():
            if self.budget is not None and not await self.budget.try_take():
                return  # the workspace's edit budget is spent: the next delta tries again
            self._last_flush = now
            await self._try(self._sync(self._layout(self.render(self.raw.rstrip()) + self.cursor)))

    async def finish(self, final_text: str, feedback: FeedbackTag | None = None) -> None:
        """Show `final_text` (already rendered) over as many messages as it needs; `feedback`
        (a FeedbackTag) puts the rating buttons on the last one."""
        if self.budget is not None:
            await self.budget.take()
        await self._sync(self._layout(final_text), final=True, feedback=feedback)

    async def replace(self, text: str) -> None:
        """Show `text` alone (e.g. a failure), dropping any further messages of this reply."""
        await self._sync([text], final=True)

    async def discard(self) -> None:
        """Delete every message of this reply (e.g. when the answer goes out ephemerally instead)."""
        for handle in self.handles:
            try:
                await self.target.delete(handle)
            except Exception:  # noqa: BLE001 - a leftover placeholder is untidy, not fatal
                log.warning("could not delete a placeholder", exc_info=True)
        self.handles.clear()
        self.shown.clear()

    def _layout(self, text: str) -> list[str]:
        return split_message(text, self.limit, self.soft_limit)

    async def _try(self, job: Awaitable[None]) -> None:
        """Interim edits are best effort: a failure (a 429, a network blip) skips a beat."""
        try:
            await job
        except Exception as exc:  # noqa: BLE001
            # Duck-typed on purpose: a platform library's rate-limit error (discord.py's
            # RateLimited) carries retry_after; any other failure waits two beats.
            retry_after = getattr(exc, "retry_after", None)
            self._backoff_until = self.clock() + float(retry_after or self.interval_s * 2)
            log.warning("interim edit failed; will retry at the next beat", extra={"error": type(exc).__name__})

    async def _sync(self, parts: list[str], final: bool = False, feedback: FeedbackTag | None = None) -> None:
        """Make the messages show `parts`: edit those that changed, post new ones as needed."""
        for i, text in enumerate(parts):
            buttons = feedback if i == len(parts) - 1 else None
            if i < len(self.handles):
                if self.shown[i] != text or buttons is not None:
                    await self.target.edit(self.handles[i], text, feedback=buttons)
                    self.shown[i] = text
                    self.edits += 1
            else:
                self.handles.append(await self.target.post(text, feedback=buttons))
                self.shown.append(text)
        if final:
            while len(self.handles) > len(parts):  # a layout that shrank: drop the surplus
                handle = self.handles.pop()
                self.shown.pop()
                await self.target.delete(handle)
