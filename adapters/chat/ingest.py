"""Ingest with progress, written once: a file shared in a chat becomes documents of its channel.

The flow, whatever the platform: refuse a file over the size limit before downloading it, post
"Reading file…", download, show the engine's progress in that message at most once per
interval ("Waiting to index file: 2 files ahead of this one…" while other ingests run), and end with "Indexed file: 3 pages, 12 chunks. Ask away." or a short failure reply
with its code and reference (a refusal that concerns only the sharer goes to them alone where
the platform can).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from adapters.chat.markup import Markup, shown_name
from adapters.chat.streaming import MessageTarget
from engine.errors import ErrorCode, ParleyError, file_too_large
from engine.knowledge.formats import DOCUMENT_SUFFIXES, IMAGE_SUFFIXES, SUPPORTED, units
from engine.types import Conversation, FileUpload, IngestProgress, IngestResult, User

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

STAGES = {"reading": "Reading", "embedding": "Embedding", "storing": "Storing"}


def progress_text(p: IngestProgress, shown: str) -> str:
    """One line of an ingest's progress: its place in line while it waits, else its stage."""
    if p.stage == "queued":  # done: the files ahead of this one (engine/knowledge/ingest_queue.py)
        if p.done <= 0:
            return f"Waiting to index {shown}: it is next…"
        return f"Waiting to index {shown}: {p.done} file{'s' if p.done != 1 else ''} ahead of this one…"
    return f"{STAGES.get(p.stage, p.stage.capitalize())} {shown}: {p.done}/{p.total} {p.unit}…"


@dataclass(frozen=True)
class SharedFile:
    """A file as a platform announced it; `download` fetches its bytes (raising ParleyError)."""

    name: str
    size: int
    mime_type: str
    download: Callable[[], Awaitable[bytes]]
    check: Callable[[], None] = lambda: None  # a platform's own refusals, before anything is posted


def is_document(name: str, content_type: str = "") -> bool:
    """Worth downloading: a document by its name, or text by the type the platform detected."""
    suffix = PurePath(name).suffix.lower()
    kind = content_type.split(";")[0].strip().lower()
    return suffix in DOCUMENT_SUFFIXES or (not suffix and (kind.startswith("text/") or kind == "message/rfc822"))


def is_picture(name: str, content_type: str = "") -> bool:
    """A picture, by its name or the type the platform detected (its text can be read: OCR)."""
    suffix = PurePath(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES or (not suffix and content_type.split(";")[0].strip().lower().startswith("image/"))


def unsupported_text(names: list[str], markup: Markup) -> str:
    """The note for attachments that are not documents (images, archives…): they are not downloaded."""
    shown = ", ".join(shown_name(n, markup) for n in names[:5]) + (" …" if len(names) > 5 else "")
    return f"{markup.warning}I can't read {shown}: I index {SUPPORTED} files ({ErrorCode.UNSUPPORTED_FILE.value})."


def ingested_text(result: IngestResult, shown: str, markup: Markup | None = None) -> str:
    """"Indexed `report.pdf`: 42 pages, 97 chunks. Ask away." and its variants. A file shared under
    the name of somebody else's document here is its own document, under a numbered name, said so."""
    if result.duplicate:
        return f"{shown} is already indexed here (version {result.version}); nothing changed."
    if result.shared_as and markup is not None:
        named = shown_name(result.filename, markup)
        shown = f"{shown} as {named}" + ("" if result.version > 1 else  # said when it was first named
                                          " (a document somebody else shared here is already named "
                                          f"{shown_name(result.shared_as, markup)}; theirs stays as it is)")
    pages = (units(result.filename, result.pages, scanned=result.scanned) + ", " if result.pages else
             units(result.filename, result.sections, sections=True) + ", " if result.sections else "")
    chunks = f"{result.chunks} chunk{'s' if result.chunks != 1 else ''}"
    version = f" (version {result.version}, replacing the earlier one)" if result.version > 1 else ""
    return f"Indexed {shown}{version}: {pages}{chunks}. Ask away."


class ProgressBoard:
    """Shows ingest progress in one message. The engine may report from a worker thread, so the
    callback only records the latest figures; a ticker on the loop edits at most once per interval."""

    def __init__(self, target: MessageTarget, handle: Any, shown: str, interval_s: float, markup: Markup):
        self.target = target
        self.handle = handle
        self.shown = shown
        self.interval_s = interval_s
        self.markup = markup
        self.latest: IngestProgress | None = None
        self._displayed: IngestProgress | None = None

    def __call__(self, progress: IngestProgress) -> None:
        self.latest = progress  # a reference assignment: safe from any thread

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            p = self.latest
            if p is None or p == self._displayed:
                continue
            self._displayed = p
            with contextlib.suppress(Exception):  # progress is best effort
                await self.target.edit(self.handle, self.markup.status.format(progress_text(p, self.shown)))


async def ingest_shared_file(engine: Engine, file: SharedFile, where: Conversation, user: User,
                             target: MessageTarget, markup: Markup, interval_s: float,
                             private: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Download a shared file and index it for its channel, telling the thread how it went."""
    shown = shown_name(file.name, markup)
    handle: Any = None
    ticker: asyncio.Task | None = None
    try:
        file.check()
        limit_mb = engine.config.knowledge.max_file_mb
        if file.size > limit_mb * 2**20:
            raise file_too_large(file.name, file.size, limit_mb)
        await engine.precheck(where, user, "ingest")  # rate limits before the download (charged once)
        handle = await target.post(markup.status.format(f"Reading {shown}…"))
        data = await file.download()
        board = ProgressBoard(target, handle, shown, interval_s, markup)
        ticker = asyncio.create_task(board.tick())
        upload = FileUpload(where=where, user=user, filename=file.name, data=data,
                            mime_type=file.mime_type.split(";")[0])
        result = await engine.ingest(upload, board)
        await _stop(ticker)
        await target.edit(handle, ingested_text(result, shown, markup))
    except ParleyError as exc:
        await _stop(ticker)  # no progress edit may land after the reply below
        log.info("file not indexed", extra={"file": file.name, "code": exc.code.value, "ref": exc.reference})
        if exc.silent or (exc.code is ErrorCode.RATE_LIMITED and private is not None):
            if handle is not None:  # the sharer's business alone
                await target.delete(handle)
            if not exc.silent:
                await private(f"{markup.warning}I didn't index {shown}: {markup.guard(exc.render())}")
        else:  # the failure may quote the file's name: the platform's rule applies to it as well
            await _say(target, handle, f"{markup.warning}I couldn't index {shown}: {markup.guard(exc.render())}")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reply with a reference
        await _stop(ticker)
        error = ParleyError(ErrorCode.INTERNAL)
        log.error("file ingest failed", extra={"file": file.name, "ref": error.reference}, exc_info=exc)
        with contextlib.suppress(Exception):
            await _say(target, handle, f"{markup.warning}I couldn't index {shown}: {error.render()}")
    finally:
        if ticker is not None:
            ticker.cancel()


async def _stop(ticker: asyncio.Task | None) -> None:
    """Stop the progress ticker, and let an edit it was making land first."""
    if ticker is not None:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)


async def _say(target: MessageTarget, handle: Any, text: str) -> None:
    await (target.edit(handle, text) if handle is not None else target.post(text))
