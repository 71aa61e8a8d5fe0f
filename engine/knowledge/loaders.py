"""Turn uploaded bytes into text, choosing the loader by content first and extension second.

Loaders: pypdf (pages kept), python-docx, BeautifulSoup/lxml for HTML, langchain-community's
CSVLoader, the standard library's email parser for EML, strict UTF-8 for TXT and Markdown.
unstructured's partitioners are not used: they classify text with a spaCy model that they
download from the internet on first use, which a self-hosted install cannot do.

Every failure a user can cause becomes a ParleyError whose message names the file.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import tempfile
import zipfile
from email import policy
from email.parser import BytesParser
from typing import Callable

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.formats import SUPPORTED, TEXT_EXTENSIONS
from engine.knowledge.records import LoadedDocument, PageText

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]  # (pages read, total pages)

# Binary formats we recognise by their first bytes, to refuse them by name.
_MAGIC = [
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", None),
    (b"\xd0\xcf\x11\xe0", "an old Office file (.doc/.xls/.ppt); save it as .docx"),
    (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"),
    (b"MZ", None), (b"\x7fELF", "a program"), (b"{\\rtf", "an RTF file; save it as .docx"),
    (b"RIFF", "a media file"), (b"ID3", "an audio file"), (b"OggS", "a media file"),
]
_EMAIL_HEADERS = re.compile(rb"^(from|to|subject|date|message-id|mime-version|received|return-path|cc):",
                            re.IGNORECASE | re.MULTILINE)
_HTML_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!doctype\s+html|<html[\s>])",
                         re.IGNORECASE | re.DOTALL)


def _error(code: ErrorCode, message: str) -> ParleyError:
    return ParleyError(code, message)


def sniff(filename: str, data: bytes) -> str:
    """The loader kind for these bytes; raises UNSUPPORTED_FILE (or FILE_UNREADABLE for a file
    whose extension promises a PDF/DOCX that its content is not)."""
    ext = os.path.splitext(filename)[1].lower()
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} looks like a damaged zip/Office file.")
        if "word/document.xml" in names:
            return "docx"
        kind = ("an Excel workbook" if "xl/workbook.xml" in names else
                "a PowerPoint deck" if "ppt/presentation.xml" in names else "a zip archive")
        raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename} is {kind}; I can read {SUPPORTED} files.")
    for magic, what in _MAGIC:
        if data.startswith(magic) and (what or ext not in TEXT_EXTENSIONS):
            what = what or "a binary file"
            raise _error(ErrorCode.UNSUPPORTED_FILE, f"{filename} is {what}; I can read {SUPPORTED} files.")
    if ext == ".pdf":
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} is not a valid PDF (no PDF header); it may be corrupt.")
    if ext == ".docx":
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} is not a valid DOCX file; it may be corrupt.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _error(ErrorCode.FILE_BAD_ENCODING,
                     f"{filename} is UTF-16 text; please save it as UTF-8 and share it again.")
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


def load(kind: str, filename: str, data: bytes, on_page: PageCallback | None = None) -> LoadedDocument:
    """Extract the text of a sniffed file. Raises ParleyError for unreadable, encrypted, empty,
    text-less or wrongly encoded input."""
    loader = _LOADERS[kind]
    pages = loader(filename, data, on_page or (lambda done, total: None))
    if not any(p.text.strip() for p in pages):
        if kind == "pdf":
            raise _error(ErrorCode.FILE_NO_TEXT,
                         f"{filename} has no text layer (a scanned document?); I can only read text. "
                         "Run it through OCR and share it again.")
        raise _error(ErrorCode.FILE_EMPTY, f"{filename} has no text in it.")
    return LoadedDocument(kind=kind, pages=tuple(p for p in pages if p.text.strip()),
                          page_count=len(pages))


# ---- the loaders -----------------------------------------------------------------------------

def _load_pdf(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are encrypted only against editing (an empty user password): those open.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                log.warning("pdf decryption unavailable", extra={"file": filename, "error": str(exc)})
                opened = 0
            if not opened:
                raise _error(ErrorCode.FILE_ENCRYPTED,
                             f"{filename} is password-protected; please share an unencrypted copy.")
        total = len(reader.pages)
    except ParleyError:
        raise
    except FileNotDecryptedError:
        raise _error(ErrorCode.FILE_ENCRYPTED, f"{filename} is password-protected; please share an unencrypted copy.")
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, AssertionError) as exc:
        log.info("pdf unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a PDF; it may be corrupt.")
    if total == 0:
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} is a PDF with no pages; it may be corrupt.")
    pages: list[PageText] = []
    failed = 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on damaged page streams
            failed += 1
            log.info("pdf page unreadable", extra={"file": filename, "page": number, "error": repr(exc)})
            text = ""
        pages.append(PageText(page=number, text=_tidy(text)))
        on_page(number, total)
    if failed == total:
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a PDF; it may be corrupt.")
    return pages


def _load_docx(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        for block in document.iter_inner_content():  # paragraphs and tables in reading order
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [c.text.strip() for c in row.cells]
                    # merged cells repeat; keep each once, in order
                    parts.append(" | ".join(dict.fromkeys(c for c in cells if c)))
            else:
                parts.append(block.text)
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        log.info("docx unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a Word document; it may be corrupt.")
    except Exception as exc:  # noqa: BLE001 - lxml and python-docx raise their own types on bad XML
        log.info("docx unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as a Word document; it may be corrupt.")
    on_page(1, 1)
    return [PageText(page=None, text=_tidy("\n\n".join(p for p in parts if p.strip())))]


def _load_html(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    text = html_to_text(data)
    on_page(1, 1)
    return [PageText(page=None, text=text)]


def html_to_text(markup: bytes | str) -> str:
    """Readable text of an HTML document; BeautifulSoup honours its declared charset."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "svg", "iframe"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head is not None:
        soup.head.decompose()
    body = soup.get_text("\n")
    return _tidy(f"{title}\n\n{body}" if title else body)


def _decode_utf8(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(ErrorCode.FILE_BAD_ENCODING,
                     f"{filename} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); "
                     "please save it as UTF-8 and share it again.")


def _load_text(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    text = _decode_utf8(filename, data)
    on_page(1, 1)
    return [PageText(page=None, text=_tidy(text))]


def _load_csv(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    from langchain_community.document_loaders.csv_loader import CSVLoader

    _decode_utf8(filename, data)  # the loader would fail later with a less helpful error
    with tempfile.TemporaryDirectory(prefix="parley-csv-") as tmp:  # CSVLoader reads from a path
        path = os.path.join(tmp, "upload.csv")
        with open(path, "wb") as f:
            f.write(data)
        try:
            rows = CSVLoader(path, encoding="utf-8-sig").load()
        except (csv.Error, RuntimeError, ValueError) as exc:
            log.info("csv unreadable", extra={"file": filename, "error": repr(exc)})
            raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as CSV: {exc}")
    on_page(1, 1)
    # Each row reads "column: value" per line; blank lines between rows let the splitter keep
    # rows whole and pack several into a chunk.
    return [PageText(page=None, text="\n\n".join(r.page_content.strip() for r in rows))]


def _load_eml(filename: str, data: bytes, on_page: PageCallback) -> list[PageText]:
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
        header = [f"{name}: {message[name]}" for name in ("Subject", "From", "To", "Cc", "Date") if message[name]]
        body_part = message.get_body(preferencelist=("plain", "html"))
        body = ""
        if body_part is not None:
            content = body_part.get_content()
            if isinstance(content, bytes):
                content = content.decode("utf-8", errors="replace")
            body = html_to_text(content) if body_part.get_content_subtype() == "html" else content
        attachments = [part.get_filename() for part in message.iter_attachments() if part.get_filename()]
    except LookupError as exc:  # an unknown charset name
        raise _error(ErrorCode.FILE_BAD_ENCODING, f"{filename} uses a text encoding I don't know ({exc}).")
    except Exception as exc:  # noqa: BLE001 - the email package raises assorted errors on defects
        log.info("eml unreadable", extra={"file": filename, "error": repr(exc)})
        raise _error(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as an email.")
    text = "\n".join(header) + "\n\n" + body
    if attachments:  # named so a question can find them; their content is not read
        text += "\n\nAttachments: " + ", ".join(attachments)
    on_page(1, 1)
    return [PageText(page=None, text=_tidy(text) if body.strip() else "")]


_LOADERS: dict[str, Callable[[str, bytes, PageCallback], list[PageText]]] = {
    "pdf": _load_pdf, "docx": _load_docx, "html": _load_html, "markdown": _load_text,
    "text": _load_text, "csv": _load_csv, "eml": _load_eml,
}

_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(\n\s*)+")


def _tidy(text: str) -> str:
    """Collapse runs of spaces and of blank lines; keep paragraph breaks for the splitter."""
    text = text.replace("\x00", "")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
