"""Records that cross the knowledge package's boundary: retrieved passages and loaded pages."""
from __future__ import annotations

from dataclasses import dataclass


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

    def label(self) -> str:
        return f"{self.file} p.{self.page}" if self.page else self.file


@dataclass(frozen=True)
class PageText:
    """Text of one page (PDF) or of a whole document (page None)."""

    page: int | None
    text: str


@dataclass(frozen=True)
class LoadedDocument:
    kind: str  # "pdf" | "docx" | "html" | "markdown" | "text" | "csv" | "eml"
    pages: tuple[PageText, ...]
    page_count: int  # pages read (1 for formats without pages)


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is embedded: its text, the page it came from, its index in the file."""

    text: str
    page: int | None
    index: int
