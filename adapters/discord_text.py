"""Text for and from Discord: the question without Parley's mention, thread names, the sources
footer and the final answer. Discord renders Markdown itself, so answers go out as the model
wrote them; mentions in them never ping anyone (the client sends no allowed mentions).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from engine.types import AnswerDone, Source

THREAD_NAME_LIMIT = 100  # Discord's limit on a thread name
_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_EMOJI = re.compile(r"<a?(:\w+:)\d+>")
_TIMESTAMP = re.compile(r"<t:(\d+)(?::[tTdDfFR])?>")


def question_text(content: str, bot_id: int | None, *, bot_role_id: int | None = None,
                  users: dict[int, str] | None = None, roles: dict[int, str] | None = None,
                  channels: dict[int, str] | None = None) -> str:
    """The message as a person reads it: Parley's own mention removed, other mentions as @name /
    #channel, custom emoji as :name:. `users`, `roles`, `channels` map ids to display names."""
    users, roles, channels = users or {}, roles or {}, channels or {}

    def user(m: re.Match) -> str:
        uid = int(m.group(1))
        return "" if uid == bot_id else "@" + users.get(uid, "someone")

    def role(m: re.Match) -> str:
        rid = int(m.group(1))
        return "" if rid == bot_role_id else "@" + roles.get(rid, "role")

    text = _USER.sub(user, content)
    text = _ROLE.sub(role, text)
    text = _CHANNEL.sub(lambda m: "#" + channels.get(int(m.group(1)), "channel"), text)
    text = _EMOJI.sub(lambda m: m.group(1), text)
    text = _TIMESTAMP.sub(lambda m: f"<t:{m.group(1)}>", text)
    text = text.replace("@everyone", "everyone").replace("@here", "here")
    return re.sub(r"[ \t]+", " ", text).strip()


def thread_name(question: str, fallback: str = "Parley") -> str:
    """A thread title from the question: its first line, cut at a word, at most 100 characters."""
    line = next((ln.strip() for ln in question.splitlines() if ln.strip()), "")
    line = re.sub(r"[*_`~|>#]+", "", line).strip() or fallback
    if len(line) <= THREAD_NAME_LIMIT:
        return line
    cut = line.rfind(" ", 0, THREAD_NAME_LIMIT - 1)
    return line[: cut if cut > THREAD_NAME_LIMIT // 2 else THREAD_NAME_LIMIT - 1].rstrip(" ,;:.") + "…"


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


def _inline(text: str) -> str:
    """Text that stays literal inside a quote line (no formatting, no code spans broken)."""
    return re.sub(r"([*_`~|\\])", r"\\\1", text)


def sources_markdown(sources: Iterable[Source], excerpt_chars: int = 180) -> str:
    """The passages an answer relied on: file, page and a quoted excerpt, one per line."""
    lines = []
    for i, s in enumerate(sources, 1):
        where = f"`{s.file.replace('`', chr(39))}`" + (f" p. {s.page}" if s.page else "")
        if s.version and s.version > 1:
            where += f" (v{s.version})"
        excerpt = shorten(s.excerpt, excerpt_chars)
        lines.append(f"> **{i}.** {where}" + (f" — “{_inline(excerpt)}”" if excerpt else ""))
    return "**Sources**\n" + "\n".join(lines) if lines else ""


def final_text(done: AnswerDone) -> str:
    """The answer as it stays in the thread: the text, a note when it was cut, the sources."""
    text = done.text.strip() or "*(no answer)*"
    if done.finish_reason == "length":
        text += "\n-# (cut at the length limit)"
    elif done.finish_reason == "cancelled":
        text += "\n-# (answer cancelled)"
    if done.sources:
        text += "\n\n" + sources_markdown(done.sources)
    return text
