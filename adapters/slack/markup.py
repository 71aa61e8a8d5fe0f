"""Slack's markup: Markdown (what the model and the commands write) to mrkdwn, Slack message text
back to plain text, and the SLACK style the chat layer renders answers and sources with.

Slack's mrkdwn is not Markdown: *bold*, _italic_, ~strike~, <url|label> links, no headings, and
&, <, > must be escaped everywhere (they start Slack's control sequences, so an unescaped
`<!channel>` written by the model would ping a whole channel). The one rule for mrkdwn (see
adapters/chat/markup.py): others' text has &, < and > escaped; the only `<…>` Parley sends are
links to http, https or mailto (`[x](!channel)` is shown as text, never `<!channel|x>`); `guard`
escapes every other < and > of whatever is posted.

Native streaming sends Markdown (SLACK_MARKDOWN), where Slack escapes nothing for us and text may
only grow: `defuse` puts an invisible word joiner inside each `<!here`, `<!channel`,
`<!everyone`, `<!subteam`, `<@…`, `<#…` and before a link target that is not http, https or
mailto, looking only behind it, so the text of a prefix stays a prefix of the text of the whole.
"""
from __future__ import annotations

import re

from adapters.chat.markup import LINK_SCHEMES, Markup, linkable

_FENCE_LINE = re.compile(r"^(\s*)(```|~~~)(.*)$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*(\S+?)(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*(\S+?)(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![\*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BOLD_MARK = "\x01"  # stands for a Slack bold asterisk until italics are done
_SLOT = "\x02{}\x03"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_OWN_LINK = re.compile(r"<(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?>", re.IGNORECASE)


def _angles(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def guard(text: str) -> str:
    """mrkdwn as it may go to Slack: every < and > that is not part of a link to http, https or
    mailto becomes an entity, so no mention, broadcast or other control sequence is left.
    Idempotent, and text the renderer wrote passes unchanged (its < and > are escaped already)."""
    out: list[str] = []
    at = 0
    for m in _OWN_LINK.finditer(text):
        out += [_angles(text[at:m.start()]), m.group()]
        at = m.end()
    out.append(_angles(text[at:]))
    return "".join(out)


def _link(url: str, label: str) -> str:
    if not linkable(url):  # `[x](!channel)` would be <!channel|x>: other schemes are shown as text
        return escape(label if label == url else f"{label} ({url})")
    url = url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
    label = escape(label.replace("|", "¦"))
    return f"<{url}|{label}>" if label else f"<{url}>"


def _convert_line(line: str) -> str:
    slots: list[str] = []

    def keep(text: str) -> str:
        slots.append(text)
        return _SLOT.format(len(slots) - 1)

    if _RULE.match(line):
        return "──────────"
    quote = ""
    m = _QUOTE.match(line)
    if m:
        quote = ">"
        line = line[m.end():]
    line = _INLINE_CODE.sub(lambda m: keep("`" + escape(m.group(2).replace("`", "'")) + "`"), line)
    line = _IMAGE.sub(lambda m: keep(_link(m.group(2), m.group(1) or m.group(2))), line)
    line = _LINK.sub(lambda m: keep(_link(m.group(2), m.group(1))), line)
    line = _AUTOLINK.sub(lambda m: keep(_link(m.group(1), "")), line)
    line = escape(line)
    heading = _HEADING.match(line)
    if heading:
        line = _BOLD_MARK + heading.group(1).replace("**", "").replace("__", "") + _BOLD_MARK
    line = _BULLET.sub(lambda m: m.group(1) + "• ", line)
    line = _BOLD.sub(lambda m: _BOLD_MARK + m.group(2) + _BOLD_MARK, line)
    line = _ITALIC_STAR.sub(lambda m: "_" + m.group(1) + "_", line)
    line = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", line)
    line = line.replace(_BOLD_MARK, "*")
    line = re.sub("\x02(\\d+)\x03", lambda m: slots[int(m.group(1))], line)
    return quote + line


def markdown_to_mrkdwn(markdown: str) -> str:
    """Convert model-written Markdown to Slack mrkdwn. Tolerates unfinished text (streaming)."""
    out: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        fence = _FENCE_LINE.match(line)
        if fence:
            # Slack shows no language hint: ```python would print "python" as code.
            out.append("```" if not in_code else "```")
            in_code = not in_code
        elif in_code:
            out.append(escape(line))
        else:
            out.append(_convert_line(line))
    return "\n".join(out)


# ---- incoming ---------------------------------------------------------------------------------

_USER_REF = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL_REF = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_SUBTEAM = re.compile(r"<!subteam\^[A-Z0-9]+(?:\|([^>]*))?>")
_URL_REF = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")


def slack_to_plain(text: str, bot_user_id: str = "") -> str:
    """Slack message text as the model should read it: the bot's own mention removed, other
    references made readable, entities unescaped."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*[:,]?", " ", text)
    text = _USER_REF.sub(lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = _CHANNEL_REF.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL.sub(lambda m: "@" + m.group(1), text)
    text = _SUBTEAM.sub(lambda m: "@" + (m.group(1) or "group").lstrip("@"), text)

    def url(m: re.Match) -> str:
        target, label = m.group(1, 2)
        target = target.removeprefix("mailto:") if label and target.startswith("mailto:") else target
        return f"{label} ({target})" if label and label != target else target

    text = _URL_REF.sub(url, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]+", " ", text).strip()


def mentions(text: str, user_id: str) -> bool:
    return bool(user_id) and re.search(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>", text) is not None


JOINER = "\u2060"  # WORD JOINER: invisible, and no Slack control sequence survives one inside it
# `<!here`, `<!channel`, `<!everyone`, `<!subteam` (matched up to the last letter, which must be
# there already: the joiner goes before it), `<@x`, `<#x`, the < possibly written as an entity.
_MD_SPECIAL = re.compile(r"(?i)(?:<|&lt;|&#0*60;|&#x0*3c;)"
                         r"(?:!(?:her(?=e)|channe(?=l)|everyon(?=e)|subtea(?=m))|[@#](?=[a-z0-9]))")
_DESTINATION = re.compile(r"\]\([ \t]*")


def _target_cut(line: str, start: int) -> int | None:
    """Where the link target starting at `start` first leaves every allowed scheme (None: never,
    as far as it goes); decided by the characters up to there only."""
    j = start
    while j < len(line) and not line[j].isspace() and line[j] != ")":
        if line[j] == JOINER:
            return None  # defused already
        so_far = line[start:j + 1].lower()
        if so_far.startswith(LINK_SCHEMES):
            return None
        if not any(s.startswith(so_far) for s in LINK_SCHEMES):
            return j
        j += 1
    return None


def _defuse_targets(line: str) -> str:
    out: list[str] = []
    at = 0
    for m in _DESTINATION.finditer(line):
        cut = _target_cut(line, m.end()) if m.end() >= at else None
        if cut is not None:
            out += [line[at:cut], JOINER]
            at = cut
    out.append(line[at:])
    return "".join(out)


def defuse(markdown: str) -> str:
    """Markdown as Slack's native streaming takes it (markdown_text): as written, but for a word
    joiner inside anything that could mention or link elsewhere than http(s)/mailto. Looks only
    behind each character, so the text of a prefix is a prefix of the text of the whole (text is
    only ever appended to a stream); idempotent."""
    text = _MD_SPECIAL.sub(lambda m: m.group() + JOINER, markdown)
    out: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if _FENCE_LINE.match(line):
            in_code = not in_code
            out.append(line)
        else:  # in a code block a link is text already
            out.append(line if in_code else _defuse_targets(line))
    return "\n".join(out)


SLACK = Markup(render=markdown_to_mrkdwn, literal=escape, guard=guard, status="_{}_", note="_({})_",
               warning=":warning: ",
               code=lambda text: f"`{escape(text)}`", sources_title="*Sources*",
               source_line="{i}. {where}{excerpt}", page=" p.{}", excerpt_chars=160)

# Native streaming (chat.startStream / appendStream / stopStream) takes Markdown and Slack renders it.
SLACK_MARKDOWN = Markup(render=defuse, literal=defuse, guard=defuse, status="_{}_", note="_({})_",
                        warning=":warning: ",
                        code=lambda text: f"`{text.replace('`', chr(39))}`", sources_title="**Sources**",
                        source_line="{i}. {where}{excerpt}", page=" p.{}", excerpt_chars=160)
