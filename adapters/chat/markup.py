"""One renderer of what the chat layer shows, given a platform's markup style.

An answer's final text (the answer, a note when it was cut, the sources it used), status lines
("Thinking…", "Queued, 2 ahead…"), warnings and file names are written here once; a `Markup`
says how a platform spells them: Slack mrkdwn, Discord Markdown, or plain console text.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.types import AnswerDone, Source

_EMPHASIS = re.compile(r"(\*\*|__|\*)(?=\S)(.+?)(?<=\S)\1")
_FENCE_LINE = re.compile(r"^\s*(```|~~~).*$\n?", re.MULTILINE)


def same(text: str) -> str:
    return text


def plain_text(markdown: str) -> str:
    """Markdown as a terminal shows it: no emphasis markers, no code fences."""
    return _EMPHASIS.sub(lambda m: m.group(2), _FENCE_LINE.sub("", markdown))


@dataclass(frozen=True)
class Markup:
    """How one platform writes things. Format strings take the text as {} (and {i}, {where}…)."""

    render: Callable[[str], str]  # Markdown (what the model and the commands write) -> platform text
    literal: Callable[[str], str]  # text shown as it is, inside the platform's markup
    status: str  # a status line: "_{}_" in Slack
    note: str  # a small note under an answer
    warning: str  # the prefix of a failure reply
    code: Callable[[str], str]  # a file name in a code span
    sources_title: str
    source_line: str  # {i}: number, {where}: file and page, {excerpt}
    page: str  # " p.{}"
    excerpt_chars: int


def shown_name(name: str, markup: Markup) -> str:
    """A file name as a reply shows it (it cannot break out of its code span)."""
    return markup.code(name.replace("`", ""))


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut at a word to at most `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


def sources_text(sources: Iterable[Source], markup: Markup) -> str:
    """The passages an answer relied on, numbered as the prompt tagged them: file, page, excerpt."""
    lines = []
    for i, s in enumerate(sources, 1):
        where = markup.code(s.file.replace("`", "'"))
        where += markup.page.format(s.page) if s.page else ""
        if s.version and s.version > 1:
            where += f" (v{s.version})"
        excerpt = shorten(s.excerpt, markup.excerpt_chars)
        excerpt = f" — “{markup.literal(excerpt)}”" if excerpt else ""
        lines.append(markup.source_line.format(i=i, where=where, excerpt=excerpt))
    return "\n".join([markup.sources_title, *lines]) if lines else ""


NOTES = {"length": "cut at the length limit", "cancelled": "answer cancelled"}


def final_text(done: AnswerDone, markup: Markup) -> str:
    """The answer as it stays in the thread: the text, a note when it was cut, the sources."""
    text = markup.render(done.text.strip()) if done.text.strip() else markup.status.format("(no answer)")
    if done.finish_reason in NOTES:
        text += "\n" + markup.note.format(NOTES[done.finish_reason])
    if done.sources:
        text += "\n\n" + sources_text(done.sources, markup)
    return text


def queued_text(ahead: int, markup: Markup) -> str:
    return markup.status.format(f"Queued, {ahead} ahead…" if ahead else "Queued, next in line…")


PLAIN = Markup(render=plain_text, literal=same, status="{}", note="({})", warning="", code=same,
               sources_title="Sources:", source_line="  [{i}] {where}{excerpt}", page=" p.{}", excerpt_chars=300)
