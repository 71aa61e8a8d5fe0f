"""Turn uploaded bytes into blocks of text, choosing the loader by content first and extension second.

Loaders: PDFium for PDF (pdf.py: word boundaries, running heads, printed page numbers, contents
pages), python-docx (headings by paragraph style, tables whole), python-pptx and openpyxl for
PPTX and XLSX (office.py: a slide a page, a sheet's rows in tables led by its header row),
BeautifulSoup/lxml for HTML (html.py: main content, inline tags inline), the standard library's
email parser for EML, and text.py for TXT, Markdown and CSV (decoded from UTF-8, UTF-16 or UTF-8 with a BOM, Windows-1252,
or another encoding charset-normalizer recognises).

unstructured is not used (and not installed): its partitioners classify text with NLTK/spaCy
data they download on first use, which a self-hosted, offline install cannot do, and the formats
it would add beyond PPTX and XLSX (ODT, EPUB, RTF) are refused by name instead.

Every failure a user can cause becomes a ParleyError whose message names the file. What one file
may cost is bounded (bounds.py: zip containers judged before reading, text formats' text by
their size, PDF pages, HTML nesting); the ingest runs these loaders in a parse worker process
(sandbox.py), where memory, CPU time and wall-clock time are bounded too.
"""
from __future__ import annotations

import io
import logging
import os
import re
from email import policy
from email.parser import BytesParser
from typing import Callable

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits, check_text, zip_names
from engine.knowledge.formats import SUPPORTED, TEXT_EXTENSIONS
from engine.knowledge.html import html_blocks, html_to_text
from engine.knowledge.ocr import load_image
from engine.knowledge.office import load_pptx, load_xlsx
from engine.knowledge.records import Block, LoadedDocument, PageText
from engine.knowledge.scanned import is_scanned_label, scanned_page_cap
from engine.knowledge.text import csv_blocks, decode, text_blocks

__all__ = ["html_to_text", "load", "sniff"]

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]  # (pages read, total pages)
Loader = Callable[[str, bytes, PageCallback, ParseLimits], list[PageText]]
DEFAULT_LIMITS = ParseLimits()
# Not a damaged file: a limit reached (the parse worker answers a memory blow-up, and is replaced).
_PASSED_ON = (ParleyError, MemoryError, RecursionError)

# Binary formats we recognise by their first bytes, to refuse them by name.
_MAGIC = [
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", None),
    (b"\xd0\xcf\x11\xe0", "an old Office file (.doc/.xls/.ppt); save it as .docx"),
    (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
    (b"MZ", None), (b"\x7fELF", "a program"), (b"{\\rtf", "an RTF file; save it as .docx"),
    (b"RIFF", "a media file"), (b"ID3", "an audio file"), (b"OggS", "a media file"),
]
# Zip containers we read, by the part that says what they are.
_ZIP_KINDS = (("word/document.xml", "docx"), ("ppt/presentation.xml", "pptx"), ("xl/workbook.xml", "xlsx"))
_EMAIL_HEADERS = re.compile(rb"^(from|to|subject|date|message-id|mime-version|received|return-path|cc):",
                            re.IGNORECASE | re.MULTILINE)
_HTML_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!doctype\s+html|<html[\s>])",
                         re.IGNORECASE | re.DOTALL)


def _error(code: ErrorCode, message: str) -> ParleyError:
    return ParleyError(code, message)


def sniff(filename: str, data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> str:
    """The loader kind for these bytes; raises UNSUPPORTED_FILE (or FILE_UNREADABLE for a file
    whose extension promises a PDF/DOCX that its content is not, FILE_TOO_COMPLEX for a zip
    container past the limits: its directory is read, nothing expanded)."""
    ext = os.path.splitext(filename)[1].lower()
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        names = zip_names(filename, data, limits)
        for part, kind in _ZIP_KINDS:
            if part in names:
                return kind
        raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename} is a zip archive; I can read {SUPPORTED} files.")
    for magic, what in _MAGIC:
        if data.startswith(magic) and (what or ext not in TEXT_EXTENSIONS):
            what = what or "a binary file"
            raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename} is {what}; I can read {SUPPORTED} files.")
    if ext == ".pdf":
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} is not a valid PDF (no PDF header); it may be corrupt.")
    if ext in (".docx", ".pptx", ".xlsx"):
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} is not a valid {ext[1:].upper()} file; it may be corrupt.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):  # a byte-order mark: text
        return TEXT_EXTENSIONS.get(ext, "text")
    if b"\x00" in data[:8192]:
        raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename} is a binary file; I can read {SUPPORTED} files.")
    if _HTML_START.match(head):
        return "html"
    if ext in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[ext]
    if len(_EMAIL_HEADERS.findall(data[:4096])) >= 3:
        return "eml"
    if ext == "":
        return "text"
    raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename}: {ext} files are not supported; I can read {SUPPORTED} files.")


def load(kind: str, filename: str, data: bytes, on_page: PageCallback | None = None,
         limits: ParseLimits = DEFAULT_LIMITS) -> LoadedDocument:
    """Extract the text of a sniffed file. Raises ParleyError for unreadable, encrypted, empty,
    text-less or wrongly encoded input, and for input past `limits`. Pages kept out of retrieval
    (contents, blank) are counted in page_count but not returned."""
    loader = LOADERS[kind]
    pages = loader(filename, data, on_page or (lambda done, total: None), limits)
    check_text(filename, kind, len(data), pages, limits)
    if not any(p.text.strip() for p in pages):
        raise _error(ErrorCode.FILE_EMPTY, f"{filename} has no text in it.")
    kept = tuple(p for p in pages if p.text.strip())
    headings = [b.text for p in kept for b in p.as_blocks() if b.kind == "heading"]
    sections = len(set(headings)) if kind == "xlsx" else len(headings)  # a sheet's name leads each of its tables
    return LoadedDocument(kind=kind, pages=kept, page_count=len(pages) if kind in ("pdf", "pptx") else 0,
                          sections=sections, scanned=sum(1 for p in pages if is_scanned_label(p.label)))


# ---- the loaders -----------------------------------------------------------------------------

def _load_pdf(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    from engine.knowledge.pdf import load_pdf

    return load_pdf(filename, data, on_page, max_pages=limits.max_pages, page_seconds=limits.page_seconds,
                    max_scanned=scanned_page_cap(limits))


def _load_docx(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    import docx
    from docx.table import Table

    zip_names(filename, data, limits)  # python-docx reads each part whole: never a bomb's
    blocks: list[Block] = []
    try:
        document = docx.Document(io.BytesIO(data))
        for item in document.iter_inner_content():  # paragraphs and tables in reading order
            if isinstance(item, Table):
                rows = []
                for row in item.rows:  # merged cells repeat; keep each once, in order
                    cells = dict.fromkeys(c.text.strip() for c in row.cells if c.text.strip())
                    rows.append(" | ".join(cells))
                if any(rows):
                    blocks.append(Block("\n".join(r for r in rows if r), kind="table"))
            elif item.text.strip():
                style = (item.style.name if item.style is not None else "") or ""
                level = re.match(r"(?:Heading|Title)\s*(\d?)", style)
                blocks.append(Block(" ".join(item.text.split()), kind="heading", level=int(level.group(1) or 1))
                              if level else Block(item.text.strip()))
    except _PASSED_ON:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, lxml and python-docx raise their own types on bad input
        log.info("docx unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a Word document; it may be corrupt.")
    on_page(1, 1)
    return [_page(blocks)]


def _page(blocks: list[Block]) -> PageText:
    return PageText(page=None, text="\n\n".join(b.text for b in blocks), blocks=tuple(blocks))


def _load_html(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    markup: bytes | str = data
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        markup = decode(filename, data)
    blocks = html_blocks(markup, filename=filename, max_depth=limits.html_max_depth,
                         max_nodes=limits.html_max_nodes)
    on_page(1, 1)
    return [_page(blocks)]


def _load_text(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    blocks = text_blocks(decode(filename, data).replace("\x00", ""), markdown=False)
    on_page(1, 1)
    return [_page(blocks)]


def _load_markdown(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    blocks = text_blocks(decode(filename, data).replace("\x00", ""), markdown=True)
    on_page(1, 1)
    return [_page(blocks)]


def _load_csv(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    blocks = csv_blocks(filename, decode(filename, data), limits.text_budget(len(data)))
    on_page(1, 1)
    return [_page(blocks)]


def _load_eml(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
        header = [f"{name}: {message[name]}" for name in ("Subject", "From", "To", "Cc", "Date") if message[name]]
        body_part = message.get_body(preferencelist=("plain", "html"))
        body: list[Block] = []
        if body_part is not None:
            content = body_part.get_content()
            if isinstance(content, bytes):
                content = content.decode("utf-8", errors="replace")
            if body_part.get_content_subtype() == "html":
                body = html_blocks(content, filename=filename, max_depth=limits.html_max_depth,
                                   max_nodes=limits.html_max_nodes)
            else:
                body = text_blocks(content)
        attachments = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    except _PASSED_ON:
        raise
    except LookupError as exc:  # an unknown charset name
        raise _error(ErrorCode.FILE_BAD_ENCODING, f"{filename} uses a text encoding I don't know ({exc}).")
    except Exception as exc:  # noqa: BLE001 - the email package raises assorted errors on defects
        log.info("eml unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as an email.")
    on_page(1, 1)
    if not body:
        return [PageText(page=None, text="")]
    blocks = [Block("\n".join(header), kind="table"), *body]
    if attachments:  # named so a question can find them; their content is not read
        blocks.append(Block("Attachments: " + ", ".join(attachments)))
    return [_page(blocks)]


LOADERS: dict[str, Loader] = {
    "pdf": _load_pdf, "docx": _load_docx, "html": _load_html, "markdown": _load_markdown,
    "text": _load_text, "csv": _load_csv, "eml": _load_eml, "pptx": load_pptx, "xlsx": load_xlsx,
    "image": load_image,  # not sniffed: a picture is read only for the turn it was shared in (ocr.py)
}
