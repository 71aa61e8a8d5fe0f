"""Text for and from Discord: the question without Parley's mention, thread names, and the
DISCORD markup style. Discord renders Markdown itself, so answers go out as the model wrote
them; mentions in them never ping anyone (the client sends no allowed mentions).
"""
from __future__ import annotations

import re

from adapters.chat.markup import Markup, same

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
    users = users or {}
    roles = roles or {}
    channels = channels or {}

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


def _inline(text: str) -> str:
    """Text that stays literal inside a quote line (no formatting, no code spans broken)."""
    return re.sub(r"([*_`~|\\])", r"\\\1", text)


DISCORD = Markup(render=same, literal=_inline, status="*{}*", note="-# ({})", warning="⚠️ ",
                 code=lambda text: f"`{text}`", sources_title="**Sources**",
                 source_line="> **{i}.** {where}{excerpt}", page=" p. {}", excerpt_chars=180)
