"""Summaries, written once for every platform: what to read, how progress shows, the reply.

A platform reads a thread or a channel's recent messages into ThreadPosts (adapters.chat.context)
and hands over a SummaryBoard: a message in a thread (TargetBoard: posted, then edited) or a
private reply (an ephemeral one). `post_summary` has the summary admitted first (Engine.summarizing:
rate limits, a summary call left, one per asker at a time), and only then reads, within a
PageBudget of API pages (summaries.max_history_pages; what it cut is said under the summary);
it turns the posts into the engine's SaidMessages, asks Engine.summarize, shows progress on long
inputs (summarised in parts), and ends with a short list of points headed by who spoke, or
"Nothing to summarise in the last 24 hours." A refusal that concerns only the asker goes to them
alone where the platform can; a repeat inside a rate limit's cool-down is not shown at all.

`/llm-summarize [HOURS] [since WHEN] [limit N]` picks the window (parse_window).
"""
from __future__ import annotations

import calendar
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from adapters.chat.answering import PRIVATE_CODES, Private
from adapters.chat.commands import usage_as_code
from adapters.chat.context import ThreadPost, as_thread_message
from adapters.chat.markup import Markup
from adapters.chat.streaming import MessageTarget
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, SaidMessage, Summary, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

DEFAULT_HOURS = 24
DEFAULT_LIMIT = 500  # messages read for a channel summary unless `limit` says otherwise
MAX_LIMIT = 2000
MAX_HOURS = 24 * 31
SUMMARY_WORDS = ("summarize", "summarise", "summary", "tldr", "tl;dr", "recap")
SUMMARIZE_USAGE = ("Usage:\n"
                   "/llm-summarize                  the last 24 hours of this channel\n"
                   "/llm-summarize 6                the last 6 hours\n"
                   "/llm-summarize since 09:00      since a time today (UTC), or since 2024-05-01 [14:30]\n"
                   "/llm-summarize 48 limit 200     at most the newest 200 messages")

ReadPosts = Callable[[], Awaitable[Sequence[ThreadPost]]]  # the posts to summarise, oldest first
Resolve = Callable[[], Awaitable[User]]  # the asker's full profile, asked only when it matters


@dataclass
class PageBudget:
    """The pages of history (API requests) one summary may read (summaries.max_history_pages),
    and what the reading left out when they ran out."""

    pages: int
    used: int = 0
    cut: str = ""  # "": all read; else what was kept: "newest" messages, a thread's "first", or "threads" short
    threads_short: int = 0  # threads whose replies were not (all) read

    @property
    def left(self) -> int:
        return max(0, self.pages - self.used)

    def take(self, keeping: str) -> bool:
        """Whether one more page may be read; when not, what the reading keeps is remembered
        ("newest", "first", "threads")."""
        if self.used < self.pages:
            self.used += 1
            return True
        self.cut = self.cut or keeping
        if keeping == "threads":
            self.threads_short += 1
        return False

    def note(self, count: int) -> str:
        """What was cut, in a sentence for under the summary ("" when nothing was)."""
        most = f"a summary reads at most {self.pages} page{'s' if self.pages != 1 else ''} of history"
        plural = "s" if count != 1 else ""
        if self.cut == "newest":
            return f"I read only the newest {count} message{plural}: {most}."
        if self.cut == "first":
            return f"I read only the first {count} message{plural} of this thread: {most}."
        if self.cut == "threads":
            threads = f"{self.threads_short} thread{'s' if self.threads_short != 1 else ''}"
            return f"I left out replies in {threads}: {most}."
        return ""


@dataclass(frozen=True)
class SummaryWindow:
    """Which messages of a channel to summarise: those after `oldest` (epoch seconds), at most `limit`."""

    oldest: float
    limit: int
    label: str  # "the last 24 hours", "since 2024-05-01 09:00 UTC"


def _usage(problem: str) -> ParleyError:
    return ParleyError(ErrorCode.INVALID_REQUEST, f"{problem}\n{SUMMARIZE_USAGE}")


def _since(words: list[str], now: float) -> tuple[float, str]:
    """`since 2024-05-01 [HH:MM]`, `since HH:MM` (today, UTC; yesterday if still ahead), `since yesterday`."""
    text = " ".join(words).strip().lower()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    if text == "yesterday":
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d")) - 86400
        return start, "since yesterday (UTC)"
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d", "%H:%M"):
        try:
            parsed = time.strptime(f"{day} {text}" if fmt == "%H:%M" else text,
                                   "%Y-%m-%d %H:%M" if fmt == "%H:%M" else fmt)
        except ValueError:
            continue
        start = calendar.timegm(parsed)
        if fmt == "%H:%M" and start > now:
            start -= 86400
        return start, f"since {time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} UTC"
    raise _usage(f"I can't read the time {text!r}.")


def parse_window(args: str, now: float | None = None) -> SummaryWindow:
    """`[HOURS] [since WHEN] [limit N]` (each optional) as a window; INVALID_REQUEST with the usage
    when it cannot be read."""
    now = time.time() if now is None else now
    words = args.strip().replace(",", " ").split()
    hours: float | None = None
    since: tuple[float, str] | None = None
    limit = DEFAULT_LIMIT
    i = 0
    while i < len(words):
        word = words[i].lower()
        if word in ("limit", "last", "max") and i + 1 < len(words) and words[i + 1].isdigit():
            limit = int(words[i + 1])
            i += 2
        elif word == "since":
            rest = [w for w in words[i + 1:]]
            cut = next((j for j, w in enumerate(rest) if w.lower() in ("limit", "last", "max")), len(rest))
            since = _since(rest[:cut], now)
            i += 1 + cut
        elif re.fullmatch(r"\d+(\.\d+)?h?", word):
            hours = float(word.rstrip("h"))
            i += 2 if i + 1 < len(words) and words[i + 1].lower() in ("h", "hour", "hours") else 1
        elif word == "help":
            raise _usage("Summarise this channel's recent messages:")
        else:
            raise _usage(f"I don't understand {words[i]!r}.")
    if not 1 <= limit <= MAX_LIMIT:
        raise _usage(f"The limit must be between 1 and {MAX_LIMIT} messages.")
    if since is not None:
        return SummaryWindow(since[0], limit, since[1])
    hours = DEFAULT_HOURS if hours is None else hours
    if not 0 < hours <= MAX_HOURS:
        raise _usage(f"The hours must be between 1 and {MAX_HOURS}.")
    label = "the last 24 hours" if hours == 24 else f"the last {hours:g} hour{'s' if hours != 1 else ''}"
    return SummaryWindow(now - hours * 3600, limit, label)


def asks_for_summary(text: str) -> bool:
    """"@Parley summarize" (the mention removed): a request for the thread's summary."""
    words = re.sub(r"[.!?]+$", "", text.strip().lower()).split()
    return bool(words) and words[0] in SUMMARY_WORDS and len(words) <= 3 and \
        all(w in ("this", "the", "thread", "please", "it") for w in words[1:])


def said_of(post: ThreadPost) -> SaidMessage | None:
    """A post as the engine summarises it: a person's words under their name, Parley's answers
    as Parley's, files and bots as placeholders; None for Parley's status lines."""
    message = as_thread_message(post)
    if message is None:
        return None
    if message.role == "assistant":
        return SaidMessage("Parley", message.text)
    return SaidMessage(message.user_name, message.text)


def summary_text(summary: Summary, what: str, markup: Markup, note: str = "") -> str:
    """The heading (what, how many messages, who spoke) and the points, in `markup`: the points
    are the model's Markdown, rendered; the speakers' names are shown as written (a display name
    is anybody's text: `<!here>` or a Markdown link in one stays text). `note`: what the reading
    left out (PageBudget.note), under the points."""
    speakers = [markup.literal(s) for s in summary.speakers[:6]]
    who = ", ".join(speakers[:-1]) + f" and {speakers[-1]}" if len(speakers) > 1 else "".join(speakers)
    more = f" and {len(summary.speakers) - 6} more" if len(summary.speakers) > 6 else ""
    plural = "s" if summary.messages != 1 else ""
    head = markup.render(f"**Summary of {what}**") + f" ({summary.messages} message{plural}"
    head += f" from {who}{more})" if who else ")"
    points = summary.points or ("(the model wrote nothing usable; try again, or a shorter window)",)
    lines = [head, markup.render("\n".join(f"- {p}" for p in points))]
    if note:
        lines.append(markup.render(f"_{note}_"))
    return "\n".join(lines)


class SummaryBoard(Protocol):
    """Where a summary shows: progress lines, then the summary (or the reason there is none)."""

    async def progress(self, text: str) -> None: ...

    async def finish(self, text: str) -> None: ...


class TargetBoard:
    """A summary in a thread or channel: one message, posted at the first progress and edited."""

    def __init__(self, target: MessageTarget):
        self.target = target
        self.handle: Any = None

    async def progress(self, text: str) -> None:
        if self.handle is None:
            self.handle = await self.target.post(text)
        else:
            with contextlib.suppress(Exception):  # progress is best effort
                await self.target.edit(self.handle, text)

    async def finish(self, text: str) -> None:
        if self.handle is None:
            self.handle = await self.target.post(text)
        else:
            await self.target.edit(self.handle, text)


async def post_summary(engine: Engine, where: Conversation, user: User, read: ReadPosts, board: SummaryBoard,
                       markup: Markup, what: str, empty: str, *, budget: PageBudget | None = None,
                       resolve: Resolve | None = None, private: Private | None = None) -> Summary | None:
    """Admit, read, summarise and show; never raises but for cancellation. `what` names what was
    read ("this thread", "the last 24 hours"); `empty` is the reply when nothing was said; `read`
    spends `budget`; `resolve` as for Engine.precheck; `private` tells the asker alone."""
    session = where.session_key
    try:
        async with engine.summarizing(where, user, resolve) as run:  # admitted before anything is read
            posts = await read()
            said = [m for m in map(said_of, posts) if m is not None]
            if not said:
                await board.finish(empty)
                return None
            log.info("summarising", extra={"session": session, "user": user.id, "messages": len(said),
                                           "pages": budget.used if budget else None,
                                           "cut": budget.cut if budget else ""})

            async def progress(done: int, total: int) -> None:
                await board.progress(markup.status.format(
                    f"Summarising {len(said)} messages in {total} parts: {done}/{total} done…"))

            summary = await engine.summarize(where, run.user, said, progress, run=run)
        await board.finish(summary_text(summary, what, markup, budget.note(len(said)) if budget else ""))
        return summary
    except ParleyError as exc:
        await _refused(exc, board, markup, private)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reply with a reference
        error = ParleyError(ErrorCode.INTERNAL)
        log.error("summary failed", extra={"ref": error.reference, "session": session}, exc_info=exc)
        await _finish_quietly(board, markup.warning + error.render())
    return None


async def _refused(exc: ParleyError, board: SummaryBoard, markup: Markup, private: Private | None) -> None:
    """A summary's failure, shown: not at all inside a rate limit's cool-down, to the asker alone
    when it concerns only them and the platform can, else on the board."""
    if exc.silent:
        return
    head, found, usage = exc.user_message.partition("Usage:")
    text = markup.warning + markup.render(f"{head.strip()} ({exc.code.value}, ref {exc.reference})"
                                          + (usage_as_code(found + usage) if found else ""))
    if private is not None and exc.code in PRIVATE_CODES:
        try:
            await private(text)
        except Exception:  # noqa: BLE001 - the platform is failing too; the log has the reason
            log.warning("could not tell a summary's refusal", exc_info=True)
        return
    await _finish_quietly(board, text)


async def _finish_quietly(board: SummaryBoard, text: str) -> None:
    try:
        await board.finish(text)
    except Exception:  # noqa: BLE001 - the platform is failing too; the log has the first error
        log.warning("could not show a summary's failure", exc_info=True)


def empty_text(what: str) -> str:
    return f"Nothing to summarise in {what}."
