"""What a parse worker and the bot say to each other (parse_worker.py, sandbox.py), and the checks
on what the bot receives.

A worker's answers are JSON; the bot rebuilds a document from them field by field, since a
worker that read a hostile file may have been subverted: a wrong type, kind or count is a broken
worker (WorkerGone), and only a file's own error codes pass through.
"""
from __future__ import annotations

import logging
from typing import Any

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.records import Block, LoadedDocument, PageText

log = logging.getLogger(__name__)

_BLOCK_KINDS = frozenset({"heading", "text", "pre", "table"})
_FILE_CODES = frozenset({ErrorCode.UNSUPPORTED_FILE, ErrorCode.FILE_TOO_LARGE, ErrorCode.FILE_EMPTY,
                         ErrorCode.FILE_UNREADABLE, ErrorCode.FILE_ENCRYPTED, ErrorCode.FILE_NO_TEXT,
                         ErrorCode.FILE_BAD_ENCODING, ErrorCode.FILE_TOO_COMPLEX})


class WorkerGone(Exception):
    """The worker ended or broke the protocol; `reason` is for the log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_document(data: Any, kind: str) -> LoadedDocument:
    """A worker's document, checked field by field (parse_worker.encode_document's shape)."""
    if not isinstance(data, dict) or data.get("kind") != kind or not isinstance(data.get("pages"), list):
        raise WorkerGone("a malformed document")
    pages = []
    for entry in data["pages"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("blocks"), list):
            raise WorkerGone("a malformed page")
        blocks = tuple(_block(item) for item in entry["blocks"])
        text = entry.get("text", "\n\n".join(b.text for b in blocks))
        page = entry.get("page")
        if not isinstance(text, str) or not (page is None or _is_count(page)):
            raise WorkerGone("a malformed page")
        pages.append(PageText(page=page, text=text, label=_string(entry.get("label", "")), blocks=blocks))
    return LoadedDocument(kind=kind, pages=tuple(pages), page_count=count(data, "page_count"),
                          sections=count(data, "sections"), scanned=count(data, "scanned"))


def _block(item: Any) -> Block:
    if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
            or item[1] not in _BLOCK_KINDS or not _is_count(item[2])):
        raise WorkerGone("a malformed block")
    return Block(item[0], kind=item[1], level=item[2])


def reported_error(message: dict[str, Any], filename: str, limits: ParseLimits) -> ParleyError:
    """The ParleyError a worker reported: a file code and its message, or a limit it reached."""
    try:
        code = ErrorCode(message.get("code"))
    except ValueError:
        code = ErrorCode.FILE_UNREADABLE
    if code not in _FILE_CODES:
        code = ErrorCode.FILE_UNREADABLE
    if message.get("limit") == "memory":
        return too_complex(filename, f"needed more than {limits.memory_mb:,} MB of memory to read")
    if message.get("limit") == "nesting":
        return too_complex(filename, "nests its content too deeply to read")
    text = message.get("message")
    if not isinstance(text, str) or not text.strip():
        log.warning("parse worker failure", extra={"file": filename, "failure": message.get("failure")})
        if code is ErrorCode.FILE_UNREADABLE:
            return ParleyError(code, f"{filename} could not be read; it may be damaged.")
        return ParleyError(code)
    return ParleyError(code, text[:500])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def count(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if not _is_count(value):
        raise WorkerGone(f"a malformed {key}")
    return value


def counts(message: dict[str, Any], key: str) -> list[int]:
    values = message.get(key)
    if not isinstance(values, list) or not all(_is_count(v) for v in values):
        raise WorkerGone(f"malformed {key}")
    return values


def number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("inf")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise WorkerGone("a malformed label")
    return value


def encode_document(document: LoadedDocument) -> dict[str, Any]:
    """A document as JSON-ready data; a page's text is left out where its blocks make it."""
    pages = []
    for page in document.pages:
        blocks = [[b.text, b.kind, b.level] for b in page.blocks]
        entry: dict[str, Any] = {"page": page.page, "label": page.label, "blocks": blocks}
        if not blocks or page.text != "\n\n".join(b.text for b in page.blocks):
            entry["text"] = page.text
        pages.append(entry)
    return {"kind": document.kind, "page_count": document.page_count, "sections": document.sections,
            "scanned": document.scanned,
            "pages": pages}
