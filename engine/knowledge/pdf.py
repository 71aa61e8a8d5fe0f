"""PDF text that reads like the document, with PDFium (pypdfium2).

Measured on Debian's Developer's Reference (114 pages, justified): pypdf ran words together in
521 places ("uploadtothequeueatleast") and took 2.0 s; PDFium places spaces by the glyphs'
positions (5 long tokens left, all real words) and takes 0.5 s with the geometry below.

From each text rectangle's position we rebuild lines, then paragraphs (a gap wider than the
line spacing, a bullet) and headings (taller than body text). Then, over the whole file:
running headers and footers (an edge line repeated on many pages, or carrying the page's own
number) are removed; the printed page number is found (/PageLabels, else the number printed
in the header or footer); contents and index pages, and nearly blank ones, are kept out of the
chunks (their lines repeat section titles word for word and win searches they should not).

Scanned pages: a page without a text layer (but not blank), or with only a few words over a
picture of the page (a scanner's stamp), is recognised by OCR once the text layers are read
(scanned.py), and its citation says so: "page 12 (scanned)". Text pages keep their text layer;
progress counts the text pages read, then each page as it is recognised.

Bounded: a PDF of more than `max_pages` pages is refused before any page is read, one with more
than `max_scanned` pages to recognise before the first is recognised, and a page that took
longer than `page_seconds` fails the file (the parse worker's parent kills a page that never
ends: engine/knowledge/sandbox.py).
"""
from __future__ import annotations

import logging
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import too_complex
from engine.knowledge.records import Block, PageText
from engine.knowledge.scanned import needs_ocr, page_label, recognise_page

log = logging.getLogger(__name__)

_PDFIUM = threading.Lock()  # PDFium is not thread-safe: one document operation at a time
_ERR_PASSWORD = 4  # FPDF_ERR_PASSWORD
EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be running heads
MIN_WORDS = 12  # a page with fewer words (a title page, "This page intentionally left blank")
_DOT_LEADER = re.compile(r"(?:\.\s?){4,}\s*\S*$|…{2,}")
_CONTINUED = re.compile(r"^\(continue[sd] (?:on next|from previous) page\)$", re.IGNORECASE)  # Sphinx
_ENDS_IN_NUMBER = re.compile(r"\s(?:\d{1,4}|[ivxlc]{1,6})$", re.IGNORECASE)
_INDEX_LINE = re.compile(r",\s*\d{1,4}(?:\s*[-–,]\s*\d{1,4})*$")
_BULLET = re.compile(r"^(?:[•◦▪‣*–-]\s|\(?\d{1,2}[.)]\s|\(?[a-z][.)]\s)")
_NUMBER = re.compile(r"^\d{1,4}$")
_NUMBERED_HEADING = re.compile(r"^\d{1,2}(?:\.\d{1,2}){1,3}\.?\s+[A-Z][^.;:]*$")  # "4.1.1 Basic rules for use"


@dataclass
class Line:
    top: float
    bottom: float
    left: float
    text: str = ""

    @property
    def height(self) -> float:
        return self.top - self.bottom


@dataclass
class RawPage:
    index: int  # 0-based
    lines: list[Line] = field(default_factory=list)
    label: str = ""
    scanned: bool = False  # its lines were recognised in its picture (no text layer)


def load_pdf(filename: str, data: bytes, on_page, *, max_pages: int = 2000,
             page_seconds: float = 15.0, max_scanned: int = 30) -> list[PageText]:
    """Pages of a PDF as blocks; pages kept out of retrieval come back with no text."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == _ERR_PASSWORD:
                raise ParleyError(ErrorCode.FILE_ENCRYPTED,
                                  f"{filename} is password-protected; please share an unencrypted copy.")
            log.info("pdf unreadable", extra={"file": filename, "error": repr(exc)})
            raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a PDF; it may be corrupt.")
        try:
            if len(document) > max_pages:
                raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                                  f"{filename} has {len(document):,} pages; I read at most {max_pages:,}. "
                                  "Please split it into smaller files.")
            raw, pictured = _read_pages(document, filename, on_page, page_seconds)
            _recognise_pages(document, raw, pictured, filename, on_page, page_seconds, max_scanned)
        finally:
            document.close()
    if not raw:
        raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} is a PDF with no pages; it may be corrupt.")
    if not any(page.lines for page in raw):
        if not pictured:
            raise ParleyError(ErrorCode.FILE_NO_TEXT, f"{filename} has no text in it: its pages are blank.")
        raise ParleyError(ErrorCode.FILE_NO_TEXT,
                          f"{filename} has no text layer, and no text could be read in it even by OCR "
                          "(text recognition on its page images). Share a sharper scan, or the document "
                          "as text.")
    assign_printed_labels(raw)
    remove_running_lines(raw)
    for page in raw:
        if page.scanned:
            page.label = page_label(page.label, page.index)
    pages = [_page_text(page) for page in raw]
    if not any(p.text for p in pages):  # a short note, all of it on nearly blank pages: keep it
        pages = [_page_text(page, min_words=1) for page in raw]
    return pages


def _read_pages(document, filename: str, on_page, page_seconds: float) -> tuple[list[RawPage], list[int]]:
    """Every page's text layer, and the indexes of the pages to recognise instead (their progress
    is counted as they are recognised)."""
    total = len(document)
    pages: list[RawPage] = []
    pictured: list[int] = []
    for index in range(total):
        started = time.monotonic()
        page = RawPage(index=index, label=(document.get_page_label(index) or "").strip())
        marked = False
        try:
            pdf_page = document[index]
            page.lines = page_lines(pdf_page.get_textpage())
            marked = needs_ocr(pdf_page, sum(len(line.text.split()) for line in page.lines), MIN_WORDS)
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged page stream: keep the other pages
            log.info("pdf page unreadable", extra={"file": filename, "page": index + 1, "error": repr(exc)})
        if time.monotonic() - started > page_seconds:
            raise too_complex(filename, f"took over {page_seconds:g} seconds to read its page {index + 1}")
        pages.append(page)
        if marked:
            pictured.append(index)
        else:
            on_page(len(pages) - len(pictured), total)
    return pages, pictured


def _recognise_pages(document, pages: list[RawPage], pictured: list[int], filename: str, on_page,
                     page_seconds: float, max_scanned: int) -> None:
    """OCR of the pages without a text layer, each reported as it is done (scanned.py)."""
    if len(pictured) > max_scanned:
        raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                          f"{filename} has {len(pictured):,} scanned pages (pages without a text layer); I "
                          f"recognise at most {max_scanned:,} in one file. Please split it into smaller files.")
    done = len(pages) - len(pictured)
    for index in pictured:
        started = time.monotonic()
        try:
            lines = recognise_page(document[index], filename, index + 1)
        except (ParleyError, MemoryError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a page PDFium cannot render: keep the other pages
            log.info("pdf page not recognised", extra={"file": filename, "page": index + 1, "error": repr(exc)})
            lines = []
        pages[index].lines = [Line(top=line.top, bottom=line.bottom, left=line.left, text=line.text)
                              for line in lines]
        pages[index].scanned = True
        seconds = time.monotonic() - started
        if seconds > page_seconds:
            raise too_complex(filename, f"took over {page_seconds:g} seconds to recognise its page {index + 1}")
        log.info("pdf page recognised", extra={"file": filename, "page": index + 1, "lines": len(lines),
                                               "seconds": round(seconds, 2)})
        done += 1
        on_page(done, len(pages))


def page_lines(textpage) -> list[Line]:
    """Text rectangles grouped into lines (top to bottom as PDFium orders them)."""
    lines: list[Line] = []
    previous_right = 0.0
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top).replace("\r", "").replace("\n", " ")
        if not text.strip():
            continue
        middle = (top + bottom) / 2
        line = lines[-1] if lines else None
        if line is not None and line.bottom - 1 <= middle <= line.top + 1:
            gap = left - previous_right
            joiner = "" if line.text.endswith(" ") or text.startswith(" ") or gap < 0.2 * line.height else " "
            line.text += joiner + text
            line.top, line.bottom = max(line.top, top), min(line.bottom, bottom)
        else:
            lines.append(Line(top=top, bottom=bottom, left=left, text=text))
        previous_right = right
    for line in lines:
        line.text = " ".join(line.text.split())
    return [line for line in lines if line.text]


# ---- page numbers and running heads ------------------------------------------------------------

def assign_printed_labels(pages: list[RawPage]) -> None:
    """Each page's printed number: its /PageLabels entry, else the number its header or footer
    prints (when one offset from the page index holds on many pages), else nothing."""
    if sum(1 for p in pages if p.label) >= len(pages) / 2:
        return
    offsets: Counter[int] = Counter()
    for page in pages:
        offsets.update({n - (page.index + 1) for n in _edge_numbers(page)})
    if not offsets:
        return
    offset, support = offsets.most_common(1)[0]
    if support < max(2, len(pages) // 4):
        return
    for page in pages:
        number = page.index + 1 + offset
        page.label = str(number) if number >= 1 else ""


def _edge_numbers(page: RawPage) -> set[int]:
    numbers = set()
    for line in _edges(page.lines):
        words = line.text.split()
        for word in {words[0], words[-1]}:
            if _NUMBER.match(word):
                numbers.add(int(word))
    return numbers


def _edges(lines: list[Line]) -> list[Line]:
    if len(lines) <= 2 * EDGE_LINES:
        return list(lines)
    return lines[:EDGE_LINES] + lines[-EDGE_LINES:]


def _shape(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower()).strip()


def remove_running_lines(pages: list[RawPage]) -> None:
    """Drop running headers and footers: an edge line whose shape (digits aside) recurs at the
    edge of many pages, or a short one that starts or ends with the page's own number."""
    counts: Counter[str] = Counter()
    for page in pages:
        counts.update({_shape(line.text) for line in _edges(page.lines)})
    repeated = max(3, len(pages) // 10)
    for page in pages:
        edges = {id(line) for line in _edges(page.lines)}
        page.lines = [line for line in page.lines
                      if id(line) not in edges or not _is_running(line, page.label, counts, repeated)]


def _is_running(line: Line, label: str, counts: Counter[str], repeated: int) -> bool:
    if counts[_shape(line.text)] >= repeated:
        return True
    words = line.text.split()
    own = {label, label.lower()} if label else set()
    return len(line.text) <= 90 and bool(own & {words[0].lower(), words[-1].lower()})


# ---- blocks --------------------------------------------------------------------------------------

def is_contents_page(lines: list[Line]) -> bool:
    """A table of contents (dot leaders, lines ending in page numbers) or a back-of-book index."""
    texts = [line.text for line in lines]
    if len(texts) < 4:
        return False
    share = lambda pattern: sum(1 for t in texts if pattern.search(t)) / len(texts)  # noqa: E731
    numbered = share(_ENDS_IN_NUMBER)
    return ((share(_DOT_LEADER) >= 0.3 and numbered >= 0.5) or share(_INDEX_LINE) >= 0.5
            or (numbered >= 0.7 and any(t.lower() in ("contents", "table of contents", "index") for t in texts[:3])))


def _page_text(page: RawPage, min_words: int = MIN_WORDS) -> PageText:
    lines = [line for line in page.lines if not _DOT_LEADER.search(line.text) and not _CONTINUED.match(line.text)]
    words = sum(len(line.text.split()) for line in lines)
    if is_contents_page(page.lines) or words < min_words:
        return PageText(page=page.index + 1, text="", label=page.label)
    blocks = paragraphs(lines)
    return PageText(page=page.index + 1, text="\n\n".join(b.text for b in blocks), label=page.label,
                    blocks=tuple(blocks))


def paragraphs(lines: list[Line]) -> list[Block]:
    """Lines joined into paragraphs: a new one after a gap wider than the usual line spacing,
    at a bullet, or at a heading (a line taller than body text)."""
    if not lines:
        return []
    body = statistics.median(line.height for line in lines)
    steps = [a.bottom - b.bottom for a, b in zip(lines, lines[1:]) if 0 < a.bottom - b.bottom < 4 * body]
    step = sorted(steps)[len(steps) // 4] if steps else body * 1.3  # the usual spacing: the commonest small step
    blocks: list[Block] = []
    current: list[str] = []
    previous: Line | None = None

    def close() -> None:
        if current:
            blocks.append(Block(join_lines(current)))
            current.clear()

    for line in lines:
        if _is_heading(line, body):
            close()
            numbered = _NUMBERED_HEADING.match(line.text)
            level = line.text.split()[0].rstrip(".").count(".") + 1 if numbered else 1 if line.height >= 1.6 * body else 2
            blocks.append(Block(line.text, kind="heading", level=level))
            previous = None
            continue
        gap = previous.bottom - line.bottom if previous is not None else 0.0
        if previous is not None and (gap > 1.3 * step or gap < 0 or _BULLET.match(line.text)):
            close()
        current.append(line.text)
        previous = line
    close()
    return blocks


def _is_heading(line: Line, body: float) -> bool:
    text = line.text
    if _NUMBERED_HEADING.match(text) and len(text) <= 80:
        return True
    return (line.height >= 1.2 * body and len(text) <= 100 and not text.endswith((".", ",", ";"))
            and (text[:1].isupper() or text[:1].isdigit()))


def join_lines(lines: list[str]) -> str:
    """Wrapped lines as one paragraph: a hyphen PDFium marked as a line-end break (\\x02) joins
    the word's halves."""
    out = ""
    for line in lines:
        if out.endswith("\x02"):
            out = out[:-1] + line
        else:
            out = f"{out} {line}" if out else line
    return out.replace("\x02", "-")
