"""Thread context, written once for every platform: the messages said in a thread before Parley
was asked, as the engine's history.

A platform reads its thread (Slack's conversations.replies, Discord's thread history or reply
chain) into ThreadPosts, oldest first; this turns them into the engine's ThreadMessages: a
person's words under their display name, Parley's own earlier answers as its turns, files and
other bots' messages as short placeholders ("[Ana shared report.pdf]"). The engine merges them
into the thread's session by message id and trims what no longer fits the context window the
way it trims any history (engine.prompting). A thread that cannot be read is answered without it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from engine.types import ThreadMessage

log = logging.getLogger(__name__)

BOT_SNIPPET_CHARS = 160  # another bot's message (an alert, a build result) shown this far
STATUS_PREFIXES = ("_", ":warning:", "⚠")  # Parley's own status lines and refusals are not answers
READ_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ThreadPost:
    """One message of a thread as a platform shows it."""

    message_id: str
    author_id: str
    author_name: str
    text: str
    files: tuple[str, ...] = ()  # names of the files attached
    by_parley: bool = False
    by_bot: bool = False  # another bot, an app or a webhook


ReadThread = Callable[[int], Awaitable[Sequence[ThreadPost]]]  # the newest `limit` posts, oldest first


def files_placeholder(name: str, files: Sequence[str]) -> str:
    """"[Ana shared report.pdf]"; "[shared report.pdf]" after words of hers, which carry her name."""
    who = f"{name} shared" if name else "shared"
    return " ".join(f"[{who} {file}]" for file in files)


def bot_placeholder(name: str, text: str) -> str:
    words = " ".join(text.split())
    if not words:
        return f"[{name or 'a bot'} (a bot) posted a message]"
    cut = words[:BOT_SNIPPET_CHARS] + ("…" if len(words) > BOT_SNIPPET_CHARS else "")
    return f"[{name or 'a bot'} (a bot) said: {cut}]"


def as_thread_message(post: ThreadPost) -> ThreadMessage | None:
    """The engine's view of one post; None for what is not conversation (Parley's status lines)."""
    if post.by_parley:
        text = post.text.strip()
        if not text or text.startswith(STATUS_PREFIXES):
            return None
        return ThreadMessage(post.message_id, "assistant", text)
    if post.by_bot:  # a placeholder names its author itself, so it goes without a name label
        return ThreadMessage(post.message_id, "user", bot_placeholder(post.author_name, post.text))
    words = post.text.strip()
    if not words:
        if not post.files:
            return None
        return ThreadMessage(post.message_id, "user", files_placeholder(post.author_name or "someone", post.files))
    text = " ".join(part for part in (words, files_placeholder("", post.files)) if part)
    return ThreadMessage(post.message_id, "user", text, post.author_id, post.author_name)


async def read_earlier(read: ReadThread, limit: int, session: str) -> tuple[ThreadMessage, ...]:
    """The thread's earlier messages for a ChatRequest (nothing when off, or when reading fails:
    the question is answered without them, and the log says why)."""
    if limit <= 0:
        return ()
    try:
        posts = await asyncio.wait_for(read(limit), READ_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the question still deserves an answer
        log.warning("thread history unavailable; answering without it",
                    extra={"session": session, "error": type(exc).__name__})
        return ()
    messages = tuple(m for m in map(as_thread_message, list(posts)[-limit:]) if m is not None)
    log.info("thread history read", extra={"session": session, "posts": len(posts), "messages": len(messages)})
    return messages
