"""Document commands: ingest and its cancelling, listing and forgetting documents.

They act on the knowledge base (None when documents are turned off), ask admission before an
ingest and the authority (engine/authority.py) before a forget or a cancel, and count ingests in
the stats. Engine's methods of the same names report their failures.

A forget or a cancel finds its target once (the name as clean_filename makes it, in this
channel) and the authority judges that very record or job: its owner (who shared it) or a
workspace admin may.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.admission import Admission
from engine.authority import Authority
from engine.errors import ErrorCode, ParleyError
from engine.ingest_cancel import SharedCancels, shared_cancels
from engine.knowledge.names import clean_filename
from engine.stats import EngineStats
from engine.types import Conversation, DocumentInfo, FileUpload, IngestResult, ProgressCallback, User

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase

__all__ = ["DocumentCommands", "shared_cancels"]

log = logging.getLogger(__name__)


class DocumentCommands:
    """The documents of a channel or workspace, as the chat commands see them."""

    def __init__(self, knowledge: KnowledgeBase | None, admission: Admission, stats: EngineStats, *,
                 authority: Authority, cancels: SharedCancels | None = None):
        self._knowledge = knowledge
        self._cancels = cancels  # with redis: a cancel asked on any replica reaches the one running it
        self._admission = admission
        self._stats = stats
        self._authority = authority

    def _require_knowledge(self) -> KnowledgeBase:
        if self._knowledge is None:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "Documents are turned off on this server.")
        return self._knowledge

    async def ingest(self, upload: FileUpload, progress: ProgressCallback | None = None) -> IngestResult:
        knowledge = self._require_knowledge()
        await self._admission.admit(upload.where, upload.user, "ingest")
        if self._cancels is None:
            result = await knowledge.ingest(upload, progress)
        else:
            name = clean_filename(upload.filename)

            def cancel(by: str) -> None:
                job = knowledge.active_ingest(upload.where, name)
                if job is not None:
                    job.cancel(by=by)

            async with self._cancels.running(upload.where, name, upload.user.id, cancel):
                result = await knowledge.ingest(upload, progress)
        self._stats.record_ingest(result.chunks)
        log.info("document ingested", extra={"file": upload.filename, "scope": upload.where.session_key,
                                             "chunks": result.chunks, "version": result.version})
        return result

    async def cancel_ingest(self, where: Conversation, name: str, user: User) -> bool:
        """Stop the ingest of file `name` in this channel, running or waiting its turn: its sharer or
        an admin may. False when nothing by that name is being indexed or waiting here. The ingest ends with CANCELLED, nothing of it kept.
        The job is found once (by the name as clean_filename makes it) and that job is checked."""
        job = self._require_knowledge().active_ingest(where, name)
        if job is None:
            return await self._cancel_elsewhere(where, clean_filename(name), user)
        async with self._authority.acting("cancel_ingest", where, user, owner=job.uploader, target=job.filename):
            job.cancel(by=user.id)  # a job still waiting its turn leaves the line at once
        log.info("ingest cancelled", extra={"file": job.filename, "scope": where.session_key, "by": user.id})
        return True

    async def _cancel_elsewhere(self, where: Conversation, name: str, user: User) -> bool:
        """Cancel the ingest of `name` another replica runs (its sharer or an admin may)."""
        uploader = await self._cancels.uploader(where, name) if self._cancels is not None else None
        if uploader is None:
            return False
        async with self._authority.acting("cancel_ingest", where, user, owner=uploader, target=name):
            await self._cancels.request(where, name, user.id)
        log.info("ingest cancel sent to the replica running it", extra={"file": name, "scope": where.session_key,
                                                                       "by": user.id})
        return True

    async def list_documents(self, where: Conversation, workspace_wide: bool | None = None) -> list[DocumentInfo]:
        """The documents of `where`'s channel (or of its workspace: `workspace_wide`, else the config's default)."""
        return await self._require_knowledge().list_documents(where, workspace_wide=workspace_wide)

    async def workspace_documents(self, where: Conversation) -> list[DocumentInfo]:
        """The documents of `where`'s workspace anyone in it may read: its public channels' (the
        Slack Home tab; a private channel's, a group DM's or a DM's are never listed there)."""
        return await self._require_knowledge().list_documents(where, workspace_wide=True)

    async def channel_changed(self, where: Conversation) -> int:
        """A channel made private or public, as the platform's own event says (no user acts): its
        documents leave or join the workspace scope at once. How many changed (none when documents
        are turned off)."""
        if self._knowledge is None:
            return 0
        changed = await self._knowledge.settle_visibility(where)
        log.info("channel visibility changed", extra={"scope": where.session_key, "now": where.visibility,
                                                      "documents": changed})
        return changed

    async def delete_document(self, where: Conversation, name: str, user: User) -> int:
        """Forget a document of this channel: its uploader or an admin may. The document is found
        once (its name as clean_filename makes it, in this channel) and that record is both the
        one checked and the one deleted; none: DOCUMENT_NOT_FOUND."""
        knowledge = self._require_knowledge()
        record = await knowledge.find_document(where, name)
        if record is None:
            raise ParleyError(ErrorCode.DOCUMENT_NOT_FOUND, "There is no document of that name here.")
        async with self._authority.acting("forget_document", where, user, owner=record.uploader,
                                          target=record.filename):
            return await knowledge.forget(record)
