"""HTML as the blocks a reader sees: the main content only, inline tags inline.

Navigation, headers, footers, sidebars and tables of contents are dropped (DocBook's navheader
and toc, Sphinx's related and sphinxsidebar, <nav>, role="navigation"…); where a page marks its
main content (<main>, role="main", Sphinx's div.body) only that is read. Text inside inline tags
(<code>, <a>, <em>) stays in its sentence; a heading, a paragraph, a list or definition item,
a <pre> sample and a table each become one block, which the splitter keeps whole when it fits.

Bounded: a document with more elements than `max_nodes` (counted in the markup, before a tree is
built: BeautifulSoup's tree takes many times the markup's size) or nested deeper than
`max_depth` is refused with FILE_TOO_COMPLEX.
"""
from __future__ import annotations

import re
import warnings

from engine.knowledge.bounds import too_complex
from engine.knowledge.records import Block

_DROP = {"script", "style", "noscript", "template", "svg", "iframe", "nav", "aside", "form", "button",
         "head", "footer", "select", "input", "canvas", "object", "map"}
_NAV_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary"}
_NAV_NAMES = re.compile(r"^(?:nav|navbar|navheader|navfooter|navigation|menu|sidebar|sphinxsidebar|related|"
                        r"breadcrumbs?|footer|header|headerlink|toc|toctree-wrapper|skip-?link|cookie.*|masthead)$")
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {"p", "div", "section", "article", "main", "body", "html", "ul", "ol", "li", "blockquote", "figure",
           "figcaption", "address", "center", "details", "summary", "dt", "dd", "caption", "hr", "fieldset",
           "legend", "dir", "menu", "td", "th", "tr", "tbody", "thead", "tfoot"}
_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[A-Za-z]")
_TAG_BYTES = re.compile(rb"<[A-Za-z]")
MAX_DEPTH = 256
MAX_NODES = 200_000


class _TooDeep(Exception):
    pass


def _soup(markup: bytes | str):
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():  # XHTML read as HTML is what we want: its tags are HTML's
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        return BeautifulSoup(markup, "lxml")


def html_blocks(markup: bytes | str, *, filename: str = "The HTML", max_depth: int = MAX_DEPTH,
                max_nodes: int = MAX_NODES) -> list[Block]:
    """The blocks of an HTML document's main content, in reading order."""
    tags = len((_TAG_BYTES if isinstance(markup, bytes) else _TAG).findall(markup))
    if tags > max_nodes:
        raise too_complex(filename, f"has {tags:,} HTML elements (at most {max_nodes:,})")
    soup = _soup(markup)
    title = _SPACE.sub(" ", soup.title.get_text()).strip() if soup.title else ""
    root = (soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("div", class_="body")
            or soup.body or soup)
    blocks: list[Block] = []
    try:
        _walk(root, blocks, [], max_depth)
    except _TooDeep:
        raise too_complex(filename, f"nests its HTML more than {max_depth} elements deep") from None
    if title and not any(b.kind == "heading" and title.lower() in b.text.lower() for b in blocks[:3]):
        blocks.insert(0, Block(title, kind="heading", level=1))
    return blocks


def html_to_text(markup: bytes | str) -> str:
    """Readable text of an HTML document (an HTML email's body, for one)."""
    return "\n\n".join(b.text for b in html_blocks(markup))


def _is_navigation(tag) -> bool:
    if tag.name in _DROP:
        return True
    if tag.name == "header":  # a site's banner, unless it holds the article's own title
        return tag.find(["h1", "h2", "h3"]) is None
    attrs = getattr(tag, "attrs", None) or {}
    if str(attrs.get("role", "")).lower() in _NAV_ROLES or attrs.get("hidden") is not None:
        return True
    names = [*attrs.get("class", []), attrs.get("id", "")]
    return any(_NAV_NAMES.match(str(n).lower()) for n in names if n)


def _walk(node, out: list[Block], inline: list[str], depth: int) -> None:
    """`depth`: how many more levels of elements may be entered."""
    from bs4 import Comment, NavigableString, Tag

    if depth <= 0:
        raise _TooDeep
    for child in node.children:
        if isinstance(child, Comment):
            continue
        if isinstance(child, NavigableString):
            inline.append(str(child))
            continue
        if not isinstance(child, Tag) or _is_navigation(child):
            continue
        name = child.name
        if name == "br":
            inline.append(" ")
        elif name in _HEADINGS:
            _flush(inline, out)
            text = _text(child)
            if text:
                out.append(Block(text, kind="heading", level=_HEADINGS[name]))
        elif name == "pre":
            _flush(inline, out)
            code = child.get_text().strip("\n").rstrip()
            if code.strip():
                out.append(Block(code, kind="pre"))
        elif name == "table":
            _flush(inline, out)
            _table(child, out)
        elif name == "dl":
            _flush(inline, out)
            _definitions(child, out, depth - 1)
        elif name in _BLOCKS:
            _flush(inline, out)
            _walk(child, out, inline, depth - 1)
            _flush(inline, out)
        else:  # inline: its text joins the sentence around it, with the spacing the source has
            _walk(child, out, inline, depth - 1)


def _flush(inline: list[str], out: list[Block]) -> None:
    text = _SPACE.sub(" ", "".join(inline)).strip()
    inline.clear()
    if text:
        out.append(Block(text))


def _text(tag) -> str:
    return _SPACE.sub(" ", tag.get_text()).strip()


def _table(table, out: list[Block]) -> None:
    """A table as one block of rows ("cell | cell"); a layout table of paragraphs is read as them."""
    rows = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue  # a nested table's rows are read with it
        cells = [_text(c) for c in row.find_all(["td", "th"], recursive=False)]
        cells = [c for c in cells if c]
        if cells:
            rows.append(" | ".join(cells))
    caption = table.find("caption")
    if caption is not None and _text(caption):
        rows.insert(0, _text(caption))
    if rows:
        out.append(Block("\n".join(rows), kind="table"))


def _definitions(dl, out: list[Block], depth: int) -> None:
    """Each term with its definition, as one block."""
    term = ""
    for child in dl.find_all(["dt", "dd"], recursive=False):
        if child.name == "dt":
            if term:
                out.append(Block(term))
            term = _text(child)
            continue
        inner: list[Block] = []
        _walk(child, inner, [], depth - 1)
        body = "\n".join(b.text for b in inner) or _text(child)
        text = f"{term}: {body}" if term else body
        term = ""
        if text.strip():
            out.append(Block(text, kind="pre" if any(b.kind == "pre" for b in inner) else "text"))
    if term:
        out.append(Block(term))
