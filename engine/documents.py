"""The Engine's document and summary commands (a part of engine.core.Engine, kept apart to keep
each module small): ingest and its cancelling, listing and forgetting documents, summaries."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from engine.errors import ErrorCode, ParleyError, reported
from engine.types import (
    Conversation,
    DocumentInfo,
    FileUpload,
    IngestResult,
    ProgressCallback,
    SaidMessage,
    Summary,
    SummaryProgress,
    User,
)

if TYPE_CHECKING:
    from engine.config import Config
    from engine.stats import EngineStats

log = logging.getLogger(__name__)


class DocumentCommands:
    """Mixed into Engine, whose knowledge base, admission, admins and failure reporting it uses."""

    config: Config
    knowledge: object | None
    stats_counters: EngineStats

    def _require_knowledge(self):
        if self.knowledge is None:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "Documents are turned off on this server.")
        return self.knowledge

    @reported("ingest")
    async def ingest(self, upload: FileUpload, progress: ProgressCallback | None = None) -> IngestResult:
        knowledge = self._require_knowledge()
        await self.admit(upload.where, upload.user, "ingest")
        result = await knowledge.ingest(upload, progress)
        self.stats_counters.record_ingest(result.chunks)
        log.info("document ingested", extra={"file": upload.filename, "scope": upload.where.session_key,
                                             "chunks": result.chunks, "version": result.version})
        return result

    @reported("cancel_ingest")
    async def cancel_ingest(self, where: Conversation, name: str, user: User) -> bool:
        """Stop the ingest of file `name` in this channel: its sharer or an admin may. False when
        nothing by that name is being indexed here. The ingest ends with CANCELLED, nothing of it kept."""
        job = self._require_knowledge().active_ingest(where, name)
        if job is None:
            return False
        if job.uploader != user.id and not self.is_admin(where, user):
            raise ParleyError(ErrorCode.FORBIDDEN, "Only the person who shared it or an admin can cancel that.")
        job.cancelled_by = user.id
        job.cancelled.set()
        log.info("ingest cancelled", extra={"file": job.filename, "scope": where.session_key, "by": user.id})
        return True

    @reported("list_documents")
    async def list_documents(self, where: Conversation, workspace_wide: bool | None = None) -> list[DocumentInfo]:
        """The documents of `where`'s channel (or of its workspace: `workspace_wide`, else the config's default)."""
        return await self._require_knowledge().list_documents(where, workspace_wide=workspace_wide)

    @reported("summarize")
    async def summarize(self, where: Conversation, user: User, messages: Sequence[SaidMessage],
                        progress: SummaryProgress | None = None) -> Summary:
        """A short list of points from `messages`, oldest first, naming who said them (engine/summaries.py)."""
        from engine.summaries import summarize

        return await summarize(self, where, user, messages, progress)

    @reported("list_documents")
    async def workspace_documents(self, where: Conversation) -> list[DocumentInfo]:
        """Every document of `where`'s workspace, whatever its channel (the Slack Home tab)."""
        return await self._require_knowledge().list_documents(where, workspace_wide=True)

    @reported("delete_document")
    async def delete_document(self, where: Conversation, name: str, user: User) -> int:
        """Forget a document of this scope: its uploader or an admin may."""
        knowledge = self._require_knowledge()
        if not self.is_admin(where, user):
            docs = await knowledge.list_documents(where)
            doc = next((d for d in docs if d.filename == name), None)
            if doc is not None and doc.uploader != user.id:
                raise ParleyError(ErrorCode.FORBIDDEN, "Only the uploader or an admin can remove that document.")
        return await knowledge.delete_document(where, name)
