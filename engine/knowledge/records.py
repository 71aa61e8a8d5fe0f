"""Records that cross the knowledge package's boundary: retrieved passages and loaded pages."""
from __future__ import annotations

from dataclasses import dataclass

from engine.types import place_label


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk, with what a citation needs.

    page is None for formats without pages (TXT, Markdown, HTML, DOCX, CSV, EML).
    score is the cosine similarity to the question (1.0 = same meaning).
    """

    text: str
    file: str
    page: int | None
    version: int
    score: float
    channel: str
    doc_id: str = ""
    chunk: int = 0
    uploader: str = ""
    uploaded_at: float = 0.0
    excerpt: str = ""  # the sentence or two of `text` closest to the question, to show as evidence
    page_label: str = ""  # the page number printed on the page ("6", "iv"); page is its index
    heading: str = ""  # the section the passage stands in ("5.11 Non-Maintainer Uploads")

    @property
    def shown_page(self) -> str | int | None:
        """What a citation calls the page: its printed number, else its index."""
        return self.page_label or self.page

    def label(self) -> str:
        return place_label(self.file, self.shown_page) if self.page else self.file


@dataclass(frozen=True)
class Block:
    """A unit of a document the splitter never cuts when it fits a chunk: a paragraph, a
    heading, a code sample, a table, a list or definition item."""

    text: str
    kind: str = "text"  # "heading" | "text" | "pre" | "table"
    level: int = 0  # headings: 1 for a chapter, 2 for its sections...


@dataclass(frozen=True)
class PageText:
    """Text of one page (PDF) or of a whole document (page None), as blocks in reading order."""

    page: int | None
    text: str
    label: str = ""  # the page number printed on it, where known
    blocks: tuple[Block, ...] = ()

    def as_blocks(self) -> tuple[Block, ...]:
        """Its blocks; text without them is cut at blank lines."""
        if self.blocks:
            return self.blocks
        return tuple(Block(part.strip()) for part in self.text.split("\n\n") if part.strip())


@dataclass(frozen=True)
class LoadedDocument:
    kind: str  # "pdf" | "docx" | "html" | "markdown" | "text" | "csv" | "eml"
    pages: tuple[PageText, ...]
    page_count: int  # pages read (0 for formats without pages)
    sections: int = 0  # headings found (what a document without pages is counted in)
    scanned: int = 0  # pages read by OCR, having no text layer (PDF)


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is embedded: its text, the page it came from, its index in the file,
    the page's printed number and the heading of the section it stands in."""

    text: str
    page: int | None
    index: int
    label: str = ""
    heading: str = ""

    @property
    def embedded_text(self) -> str:
        """What is embedded and indexed: the heading says what a short passage is about."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text
