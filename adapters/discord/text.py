"""Text for and from Discord: the question without Parley's mention, thread names, and the
DISCORD markup style. Discord renders Markdown itself, so answers go out as the model wrote
them, with two exceptions (the one rule for Discord, see adapters/chat/markup.py): a zero-width
space after the @ of @everyone, @here, <@id>, <@!id>, <@&id> and after the # of <#id>, so none
is a mention; and masked links to anything but http, https or mailto shown as text. Every send
and edit also carries NO_MENTIONS (the client's default too): two locks, either enough.
"""
from __future__ import annotations

import re

import discord

from adapters.chat.markup import Markup, linkable

THREAD_NAME_LIMIT = 100  # Discord's limit on a thread name
_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_EMOJI = re.compile(r"<a?(:\w+:)\d+>")
_TIMESTAMP = re.compile(r"<t:(\d+)(?::[tTdDfFR])?>")
NO_MENTIONS = discord.AllowedMentions.none()  # passed on every send and edit
ZWSP = "\u200b"
_MENTION = re.compile(r"(?i)@(?=everyone|here)|(?<=<)[@#](?=[!&]?\d)")
_FENCE_LINE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).+?\1")
_MASKED_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def escape_mentions(text: str) -> str:
    """`text` with no mention left in it (idempotent): a zero-width space after the @ or #."""
    return _MENTION.sub(lambda m: m.group() + ZWSP, text)


def _masked_link(m: re.Match) -> str:
    label, target = m.group(1, 2)
    if linkable(target):
        return m.group()
    return label if label == target or not target else f"{label} ({target})"


def _links_as_text(line: str) -> str:
    """Masked links in `line` to other schemes than http, https, mailto as text; code spans kept."""
    out: list[str] = []
    at = 0
    for code in _INLINE_CODE.finditer(line):
        out += [_MASKED_LINK.sub(_masked_link, line[at:code.start()]), code.group()]
        at = code.end()
    out.append(_MASKED_LINK.sub(_masked_link, line[at:]))
    return "".join(out)


def discord_markdown(markdown: str) -> str:
    """Model-written Markdown as Discord shows it: as written, but for mentions and odd links."""
    out: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        if _FENCE_LINE.match(line):
            in_code = not in_code
        out.append(line if in_code else _links_as_text(line))
    return escape_mentions("\n".join(out))


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
    line = escape_mentions(re.sub(r"[*_`~|>#]+", "", line).strip() or fallback)
    if len(line) <= THREAD_NAME_LIMIT:
        return line
    cut = line.rfind(" ", 0, THREAD_NAME_LIMIT - 1)
    return line[: cut if cut > THREAD_NAME_LIMIT // 2 else THREAD_NAME_LIMIT - 1].rstrip(" ,;:.") + "…"


def _inline(text: str) -> str:
    """Text that stays literal inside a quote line (no formatting, no code spans broken)."""
    return re.sub(r"([*_`~|\\\[\]])", r"\\\1", text)


DISCORD = Markup(render=discord_markdown, literal=lambda text: _inline(escape_mentions(text)),
                 guard=escape_mentions, status="*{}*", note="-# ({})", warning="⚠️ ",
                 code=lambda text: f"`{text}`", sources_title="**Sources**",
                 source_line="> **{i}.** {where}{excerpt}", page=" p. {}", excerpt_chars=180)
