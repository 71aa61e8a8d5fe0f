"""One renderer of what the chat layer shows, given a platform's markup style.

An answer's final text (the answer, a note when it was cut, the sources it used), status lines
("Thinking…", "Queued, 2 ahead…"), warnings and file names are written here once; a `Markup`
says how a platform spells them: Slack mrkdwn, Discord Markdown, or plain console text.

Safe echo. Most of what Parley posts it did not write: the model's answer, file and document
names, people's names, excerpts, words quoted back from a command. Each platform has one escaping
rule for such text, and it is applied twice over, by design:
- where text is written (`render`, `literal`, `code`), so that it shows as it was written: the
  renderer escapes everything it is given, and only Parley's own markup (the format strings
  below, and links to http, https or mailto that `render` builds) stays markup;
- where text leaves for the platform (`guard`, called by every target, reply and command answer
  of an adapter), so that a reply that forgets the first cannot ping anyone: a new kind of reply
  is safe by default. `guard` is idempotent and leaves Parley's own markup alone.
The rules: SLACK (mrkdwn) escapes &, < and >, so no `<!here>`, `<!channel>`, `<!everyone>`,
`<!subteam^…>`, `<@U…>` or `<#C…>` can be formed; DISCORD breaks @everyone, @here, <@id>, <@&id>
and <#id> with a zero-width space (and every send also carries no allowed mentions); PLAIN (the
terminal) has nothing to escape.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.types import AnswerDone, Source, named_place

_EMPHASIS = re.compile(r"(\*\*|__|\*)(?=\S)(.+?)(?<=\S)\1")
_FENCE_LINE = re.compile(r"^\s*(```|~~~).*$\n?", re.MULTILINE)


LINK_SCHEMES = ("http://", "https://", "mailto:")  # the only links Parley makes; any other is shown as text


def same(text: str) -> str:
    return text


def linkable(url: str) -> bool:
    """Whether `url` may become a link: http, https or mailto (not `!channel`, `javascript:`…)."""
    return url.strip().lower().startswith(LINK_SCHEMES)


def plain_text(markdown: str) -> str:
    """Markdown as a terminal shows it: no emphasis markers, no code fences."""
    return _EMPHASIS.sub(lambda m: m.group(2), _FENCE_LINE.sub("", markdown))


@dataclass(frozen=True)
class Markup:
    """How one platform writes things. Format strings take the text as {} (and {i}, {where}…)."""

    # Markdown (what the model and the commands write) -> platform text; escapes all it is given
    # but Markdown's own formatting, and links only to http, https and mailto
    render: Callable[[str], str]
    literal: Callable[[str], str]  # text shown as it is, inside the platform's markup
    guard: Callable[[str], str]  # the last pass over anything posted: nothing in it can mention anyone
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
        if named_place(s.page):
            where += f" {markup.literal(s.page)}"
        elif s.page:
            where += markup.page.format(s.page)
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


PLAIN = Markup(render=plain_text, literal=same, guard=same, status="{}", note="({})", warning="", code=same,
               sources_title="Sources:", source_line="  [{i}] {where}{excerpt}", page=" p.{}", excerpt_chars=300)
