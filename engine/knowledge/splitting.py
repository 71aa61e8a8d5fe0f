"""Pack a document's blocks into chunks sized in the embedding model's own tokens.

Blocks (paragraphs, code samples, tables, list and definition items) are packed whole, in
order, until the next would overflow the chunk; a block too long for any chunk is cut by
langchain's RecursiveCharacterTextSplitter (lines, then sentences, then words, with overlap).
Each chunk remembers the heading of the section it stands in: it is embedded and indexed with
the chunk, so a short code sample or table row is never separated from what it is about.
Chunks never cross a page, so every chunk cites one page.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from engine.knowledge.records import Block, ChunkDraft, PageText

HEADING_CHARS = 120  # a heading longer than this is cut where it is attached to a chunk

# A run of this many characters without whitespace (base64, a minified blob, a line of dashes)
# is cut into pieces: otherwise the splitter falls back to one call per character.
LONG_RUN = 100
_LONG_RUN = re.compile(r"\S{%d,}" % (LONG_RUN + 1))
_PROSE_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
# Code and tables: whole lines (rows) before anything else.
_LINE_SEPARATORS = ["\n\n", "\n", ". ", "; ", ", ", " ", ""]


def token_counter(tokenizer) -> Callable[[str], int]:
    """Count word pieces of the embedding model's tokenizer, memoised.

    The splitter measures every word of an over-long paragraph separately; words repeat, so a
    cache makes a huge single line cheap. The Rust tokenizer behind a fast HF tokenizer counts
    the same pieces as tokenizer.tokenize() about four times faster.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        from tokenizers import Tokenizer

        # A private copy: the shared one truncates at the model's window (every long text would
        # count 128) and sentence-transformers re-arms truncation on it at every encode.
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()

        def count(text: str) -> int:
            return len(backend.encode(text, add_special_tokens=False).ids)
    else:
        def count(text: str) -> int:
            return len(tokenizer.tokenize(text))
    return functools.lru_cache(maxsize=200_000)(count)


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int,
                  kind: str) -> RecursiveCharacterTextSplitter:
    separators = (RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
                  if kind == "markdown" else _LINE_SEPARATORS if kind == "lines" else _PROSE_SEPARATORS)
    if kind == "markdown" and ". " not in separators:  # fall back to sentences before words
        at = separators.index(" ")
        separators = separators[:at] + [". ", "? ", "! ", "; ", ", "] + separators[at:]
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, length_function=count_tokens,
        separators=separators, keep_separator="end", strip_whitespace=True)


def break_long_runs(text: str, limit: int = LONG_RUN) -> str:
    return _LONG_RUN.sub(lambda m: " ".join(m.group(0)[i:i + limit] for i in range(0, len(m.group(0)), limit)),
                         text)


@dataclass
class _Packer:
    """Collects the blocks of the chunk being filled; one per document, fed page by page."""

    count: Callable[[str], int]
    chunk_tokens: int
    overlap: int
    kind: str
    drafts: list[ChunkDraft] = field(default_factory=list)
    headings: list[tuple[int, str]] = field(default_factory=list)  # the open sections, outermost first
    parts: list[str] = field(default_factory=list)
    used: int = 0
    bare_heading: str = ""  # a heading no text has followed yet

    @property
    def heading(self) -> str:
        return self.headings[-1][1][:HEADING_CHARS] if self.headings else ""

    def open_section(self, block: Block, page: PageText) -> None:
        self.flush(page)
        if self.bare_heading:  # a heading with nothing under it is still text of the document
            self.emit(self.bare_heading, page, heading="")
        level = block.level or 1
        self.headings = [h for h in self.headings if h[0] < level] + [(level, " ".join(block.text.split()))]
        self.bare_heading = block.text

    def add(self, block: Block, page: PageText) -> None:
        self.bare_heading = ""
        text = break_long_runs(block.text)
        budget = max(16, self.chunk_tokens - (self.count(self.heading) + 1 if self.heading else 0))
        size = self.count(text)
        if self.parts and self.used + size + 1 > budget:
            self.flush(page, carry=True)
            if self.parts and self.used + size + 1 > budget:
                self.flush(page)
        if size <= budget:
            self.parts.append(text)
            self.used += size + (1 if self.used else 0)
            return
        splitter = make_splitter(self.count, budget, min(self.overlap, budget // 2),
                                 "lines" if block.kind in ("pre", "table") else self.kind)
        for piece in splitter.split_text(text):
            if piece.strip():
                self.emit(piece.strip(), page, self.heading)

    def flush(self, page: PageText, *, carry: bool = False) -> None:
        """Close the chunk being filled. With `carry`, a last block that leads in to what follows
        ("…use these values:") moves on to the next chunk instead of ending this one."""
        lead_in = self.parts.pop() if carry and len(self.parts) > 1 and self.parts[-1].endswith(":") else ""
        if self.parts:
            self.emit("\n".join(self.parts), page, self.heading)
        self.parts, self.used = ([lead_in], self.count(lead_in)) if lead_in else ([], 0)

    def emit(self, text: str, page: PageText, heading: str) -> None:
        self.drafts.append(ChunkDraft(text=text, page=page.page, index=len(self.drafts), label=page.label,
                                      heading=heading))


def split_pages(pages: Iterable[PageText], count: Callable[[str], int], chunk_tokens: int,
                overlap_tokens: int, kind: str) -> list[ChunkDraft]:
    """The chunks of a document's pages, in order (see the module's doc)."""
    packer = _Packer(count, chunk_tokens, overlap_tokens, kind)
    last: PageText | None = None
    for page in pages:
        for block in page.as_blocks():
            if block.kind == "heading":
                packer.open_section(block, page)
            elif block.text.strip():
                packer.add(block, page)
        packer.flush(page)
        last = page
    if last is not None and packer.bare_heading:
        packer.emit(packer.bare_heading, last, heading="")
    return packer.drafts
