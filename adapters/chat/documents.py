"""Document commands and forgetting deleted files, written once for every platform.

`/llm-docs` lists the documents a channel's questions can use (its own, and with the channel's
`scope workspace` those of the workspace's public channels, marked); `/llm-docs forget NAME`
removes one (its sharer or an admin: the engine decides); `/llm-docs cancel NAME` stops an
ingest in progress (its sharer or an admin). A name is unique in a channel: a file shared under
the name of somebody else's document became its own, numbered ("report (2).pdf"), and is
listed with the name it was shared as.

SharedDocuments remembers which shared file (and which message carrying it) became which
document, so that deleting the file or the message forgets the document too. It remembers the
content's hash and the sharer, and forgets a document only while it is still that upload: a newer
version shared by somebody else stays.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.chat.ingest import SharedFile
from adapters.chat.wording import Wording
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.formats import SUPPORTED, units
from engine.knowledge.names import clean_filename
from engine.types import Conversation, DocumentInfo, User

if TYPE_CHECKING:
    from adapters.chat.records import Records
    from engine.core import Engine

log = logging.getLogger(__name__)

DOCS_USAGE = ("Usage:\n"
              "/llm-docs                list the documents this channel can use\n"
              "/llm-docs forget NAME    remove a document (whoever shared it, or an admin)\n"
              "/llm-docs cancel NAME    stop indexing a document (whoever shared it, or an admin)")


@dataclass(frozen=True)
class DocRef:
    """Which document a shared file became: its channel, name, content hash and sharer."""

    platform: str
    workspace: str
    channel: str
    filename: str
    sha256: str
    sharer: str

    @property
    def scope(self) -> Conversation:
        return Conversation(self.platform, self.workspace, self.channel, "")


def doc_refs(stored) -> tuple[DocRef, ...]:
    """The DocRefs a record holds: kept as themselves (SQLite) or as JSON objects (Redis)."""
    return tuple(r if isinstance(r, DocRef) else DocRef(**r) for r in stored or ())


def parse_docs_args(args: str) -> tuple[str, str]:
    """("list" | "forget" | "cancel" | "help", NAME)."""
    words = args.strip().split(None, 1)
    if not words or words[0].lower() in ("list", "ls"):
        return "list", ""
    action = words[0].lower()
    name = (words[1] if len(words) > 1 else "").strip().strip("`'\"“”‘’").strip()
    if action in ("forget", "remove", "delete", "rm"):
        return ("forget", name) if name else ("help", "")
    if action in ("cancel", "stop"):
        return ("cancel", name) if name else ("help", "")
    return "help", ""


async def llm_docs(engine: Engine, where: Conversation, user: User, args: str, wording: Wording) -> str:
    """`/llm-docs [forget NAME | cancel NAME]`: Markdown for the one who asked."""
    action, name = parse_docs_args(args)
    if action == "help":
        return "\n```\n" + DOCS_USAGE + "\n```"
    scope = dataclasses.replace(where, thread="")  # its visibility and a private thread's own documents kept
    if action == "forget":
        return await forget_command(engine, scope, user, name)
    if action == "cancel":
        return await cancel_command(engine, scope, user, name)
    settings = await engine.channel_settings(scope)
    wide = settings.scope == "workspace"
    docs = await engine.list_documents(scope, workspace_wide=wide)
    return await documents_text(docs, scope, wide, wording)


async def documents_text(docs: list[DocumentInfo], where: Conversation, wide: bool, wording: Wording) -> str:
    if not docs:
        place = "this workspace" if wide else "this channel"
        return f"No documents in {place} yet. Share a {SUPPORTED} file here and I'll index it."
    head = f"**Documents this channel can use** ({len(docs)}" + (", workspace-wide" if wide else "") + ")"
    lines = [head]
    for doc in docs:
        pages = units(doc.filename, doc.pages, scanned=doc.scanned) + ", " if doc.pages else ""
        who = await _name_of(doc.uploader, wording)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(doc.uploaded_at))
        shared_as = f" as `{doc.shared_as.replace('`', '')}`" if doc.shared_as else ""
        line = (f"• `{doc.filename.replace('`', '')}` v{doc.version} — {pages}{_chunks(doc.chunks)}"
                f" — shared by {who}{shared_as}, {when}")
        if doc.channel and doc.channel not in (where.channel, where.documents_at):
            line += " — *workspace-wide, from another channel*"
        lines.append(line)
    lines.append("Forget one with `/llm-docs forget NAME` (whoever shared it, or an admin).")
    return "\n".join(lines)


def _chunks(n: int) -> str:
    return f"{n} chunk" if n == 1 else f"{n} chunks"


async def _name_of(user_id: str, wording: Wording) -> str:
    if wording.people is None or not user_id:
        return user_id or "someone"
    try:
        return await wording.people(user_id) or user_id
    except Exception:  # noqa: BLE001 - a name is a nicety; the id still says who
        log.debug("display name unavailable", extra={"user": user_id}, exc_info=True)
        return user_id


async def forget_command(engine: Engine, where: Conversation, user: User, name: str) -> str:
    shown = f"`{clean_filename(name).replace('`', '')}`"  # the name the document was looked up by
    try:
        removed = await engine.delete_document(where, name, user)
    except ParleyError as exc:
        if exc.code is ErrorCode.DOCUMENT_NOT_FOUND:
            return f"There is no document named {shown} here; nothing was removed. `/llm-docs` lists them."
        if exc.code is not ErrorCode.FORBIDDEN:
            raise
        log.info("document forget refused", extra={"user": user.id, "file": name, "scope": where.session_key})
        return (f"Sorry, only the person who shared {shown} or an admin can remove it. "
                "Ask them, or an admin, to run `/llm-docs forget` for you."
                + await _yours(engine, where, user, name))
    log.info("document forgotten", extra={"user": user.id, "file": name, "scope": where.session_key})
    return f"Forgot {shown} ({_chunks(removed)}): questions here no longer use it."


async def _yours(engine: Engine, where: Conversation, user: User, name: str) -> str:
    """Where `user` shared a file of that name beside somebody else's: which name theirs has."""
    name = clean_filename(name)
    docs = await engine.list_documents(where, workspace_wide=False)
    mine = next((d for d in docs if d.shared_as == name and d.uploader == user.id), None)
    return f" The `{name.replace('`', '')}` you shared is `{mine.filename.replace('`', '')}`." if mine else ""


async def cancel_command(engine: Engine, where: Conversation, user: User, name: str) -> str:
    shown = f"`{name.replace('`', '')}`"
    try:
        cancelled = await engine.cancel_ingest(where, name, user)
    except ParleyError as exc:
        if exc.code is not ErrorCode.FORBIDDEN:
            raise
        return f"Sorry, only the person who shared {shown} or an admin can cancel its indexing."
    if not cancelled:
        return f"Nothing named {shown} is being indexed in this channel."
    log.info("ingest cancelled", extra={"user": user.id, "file": name, "scope": where.session_key})
    return f"Stopped indexing {shown}; nothing of it was kept."


class SharedDocuments:
    """Which shared files became which documents, kept in `records` under the platform's keys
    (a file id, a message id): deleting either forgets the document."""

    def __init__(self, engine: Engine, records: Records):
        self.engine = engine
        self.records = records

    def watch(self, file: SharedFile, where: Conversation, user: User, keys: list[str]) -> SharedFile:
        """`file`, recording under `keys` what it becomes once downloaded (its hash, its sharer)."""
        download = file.download

        async def recorded() -> bytes:
            data = await download()
            ref = DocRef(where.platform, where.workspace, where.documents_at, clean_filename(file.name),
                         hashlib.sha256(data).hexdigest(), user.id)
            for key in keys:
                known = doc_refs(await self.records.get(key))
                await self.records.put(key, tuple(r for r in known if r.filename != ref.filename) + (ref,))
            return data

        return dataclasses.replace(file, download=recorded)

    async def forget(self, key: str) -> list[str]:
        """Forget the documents recorded under `key` (the file or message went); their names."""
        refs = doc_refs(await self.records.pop(key))
        forgotten = []
        for ref in refs:
            try:
                if await self._forget(ref):
                    forgotten.append(ref.filename)
            except ParleyError as exc:
                log.warning("could not forget a deleted file's document",
                            extra={"file": ref.filename, "code": exc.code.value, "ref": exc.reference})
        return forgotten

    async def channel_changed(self, where: Conversation) -> None:
        """The platform made `where`'s channel private or public (`where.visibility`): its
        documents leave or join the workspace scope now."""
        try:
            await self.engine.channel_changed(where)
        except ParleyError as exc:
            log.warning("could not record a channel's new visibility",
                        extra={"scope": where.session_key, "code": exc.code.value, "ref": exc.reference})

    async def _forget(self, ref: DocRef) -> bool:
        docs = await self.engine.list_documents(ref.scope, workspace_wide=False)
        # Its own document: shared under that name, or numbered beside somebody else's of that name
        doc = next((d for d in docs if ref.filename in (d.filename, d.shared_as) and d.uploader == ref.sharer
                    and d.channel == ref.channel), None)
        if doc is None or doc.sha256 != ref.sha256:
            return False  # gone already, or replaced since by another upload: that one stays
        # The platform told us the sharer's file (or its message) was deleted: Slack and Discord
        # let only the sharer or a moderator do that, so it is forgotten in the sharer's name.
        removed = await self.engine.delete_document(ref.scope, doc.filename, User(ref.sharer))
        log.info("deleted file's document forgotten",
                 extra={"file": ref.filename, "scope": ref.scope.session_key, "chunks": removed})
        return True
