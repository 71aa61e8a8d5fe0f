"""Documents have owners and a visibility, in the knowledge base itself (real MiniLM, real Chroma):
whose upload becomes which document, who reaches a document under the workspace-wide scope, how
documents from before visibility was recorded learn it, and names that only look alike.
The same attacks through the Slack and Discord adapters: test_document_trust.py."""
from __future__ import annotations

import dataclasses

import pytest

import docgen
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.names import clean_filename, numbered_name
from engine.types import Conversation, FileUpload, User

PUBLIC = Conversation("slack", "T1", "CPUB", "1.1", visibility="public")
ELSEWHERE = Conversation("slack", "T1", "COTHER", "2.1", visibility="public")
PRIVATE = Conversation("slack", "T1", "CPRIV", "3.1", visibility="private")
DM = Conversation("slack", "T1", "DANA", "dm", visibility="dm")
GROUP_DM = Conversation("slack", "T1", "GMPIM", "4.1", visibility="group_dm")
ANA = User("U-ana", "Ana")
BO = User("U-bo", "Bo")
LEEDS = "When does the Leeds branch open?"


def upload(where: Conversation, name: str, data: bytes, user: User = ANA) -> FileUpload:
    return FileUpload(where=where, user=user, filename=name, data=data)


def notes(opening: str = "3 March") -> bytes:
    return docgen.notes_txt().replace(b"opens on 3 March", f"opens on {opening}".encode())


async def files_found(kb, where: Conversation, question: str = LEEDS, **kwargs) -> set[str]:
    return {p.file for p in await kb.search(where, question, k=10, **kwargs)}


# ---- names -----------------------------------------------------------------------------------

def test_look_alike_names_are_the_name_they_look_like():
    for look_alike in ("re\u200bport.pdf", "\u202areport.pdf\u202c", "report\u2060.pdf", "\ufeffreport.pdf",
                       "rep\u200dort.pdf", "\u2066report.pdf\u2069", "report.pdf\u200e", "ｒｅｐｏｒｔ.pdf",
                       "x/report.pdf", "..\\report.pdf", "report\x00.pdf", "ﬁles/report.pdf"):
        assert clean_filename(look_alike) == "report.pdf", repr(look_alike)
    assert clean_filename("\u202egpj.exe") == "gpj.exe"  # a right-to-left override cannot reverse what is shown
    assert clean_filename("ﬁnal.pdf") == "final.pdf" and clean_filename("\u200b") == "upload"
    assert numbered_name("report.pdf", {"report.pdf"}) == "report (2).pdf"
    assert numbered_name("report.pdf", {"report.pdf", "report (2).pdf"}) == "report (3).pdf"
    assert numbered_name("README", {"README"}) == "README (2)"


# ---- owners ----------------------------------------------------------------------------------

async def test_another_members_upload_under_the_same_name_is_their_own_document(make_kb):
    kb = make_kb(min_relevance=-1.0, min_evidence=-2.0)
    ana = await kb.ingest(upload(PUBLIC, "notes.txt", notes("3 March")))
    bo = await kb.ingest(upload(PUBLIC, "notes.txt", notes("9 May"), BO))
    assert (ana.filename, ana.version, ana.shared_as) == ("notes.txt", 1, "")
    assert (bo.filename, bo.version, bo.shared_as) == ("notes (2).txt", 1, "notes.txt")
    docs = {d.filename: d for d in await kb.list_documents(PUBLIC)}
    assert (docs["notes.txt"].uploader, docs["notes.txt"].version) == ("U-ana", 1), "Ana's was not replaced"
    assert (docs["notes (2).txt"].uploader, docs["notes (2).txt"].shared_as) == ("U-bo", "notes.txt")
    passages = await kb.search(PUBLIC, LEEDS, k=10)
    assert any(p.file == "notes.txt" and "3 March" in p.text for p in passages), "Ana's chunks are all there"
    assert any(p.file == "notes (2).txt" and "9 May" in p.text for p in passages)

    # Each adds versions to their own: Bo sharing notes.txt again is his second version.
    bo2 = await kb.ingest(upload(PUBLIC, "notes.txt", notes("1 June"), BO))
    ana2 = await kb.ingest(upload(PUBLIC, "notes.txt", notes("4 April")))
    assert (bo2.filename, bo2.version, ana2.filename, ana2.version) == ("notes (2).txt", 2, "notes.txt", 2)
    assert sorted((d.filename, d.uploader, d.version) for d in await kb.list_documents(PUBLIC)) == \
        [("notes (2).txt", "U-bo", 2), ("notes.txt", "U-ana", 2)]


async def test_a_forget_finds_its_document_once_and_deletes_only_that_owners(make_kb):
    kb = make_kb()
    await kb.ingest(upload(PUBLIC, "notes.txt", notes()))
    record = await kb.find_document(PUBLIC, "x/notes\u200b.txt")  # the name as the store knows it
    assert record is not None and (record.filename, record.uploader) == ("notes.txt", "U-ana")
    assert await kb.find_document(ELSEWHERE, "notes.txt") is None, "never another channel's"
    # Between the check and the delete, the document went and Bo's upload took its name: Ana's
    # record does not delete Bo's document.
    await kb.delete_document(PUBLIC, "notes.txt")
    await kb.ingest(upload(PUBLIC, "notes.txt", notes("9 May"), BO))
    with pytest.raises(ParleyError) as err:
        await kb.forget(record)
    assert err.value.code is ErrorCode.DOCUMENT_NOT_FOUND
    assert [(d.filename, d.uploader) for d in await kb.list_documents(PUBLIC)] == [("notes.txt", "U-bo")]


# ---- visibility ------------------------------------------------------------------------------

async def test_the_workspace_scope_reaches_public_channels_documents_only(make_kb):
    kb = make_kb(min_relevance=-1.0, min_evidence=-2.0, workspace_scope=["T1"])
    await kb.ingest(upload(PUBLIC, "public.txt", notes("3 March")))
    await kb.ingest(upload(PRIVATE, "private.txt", notes("9 May")))
    await kb.ingest(upload(DM, "dm.txt", notes("1 June")))
    await kb.ingest(upload(GROUP_DM, "group.txt", notes("4 April")))
    await kb.ingest(upload(dataclasses.replace(PUBLIC, channel="CUNKNOWN", visibility="unknown"), "unknown.txt",
                           notes("2 July")))
    assert await files_found(kb, ELSEWHERE) == {"public.txt"}
    assert [d.filename for d in await kb.list_documents(ELSEWHERE)] == ["public.txt"]
    # Each private place still has its own, and the public ones, nobody else's
    assert await files_found(kb, PRIVATE) == {"public.txt", "private.txt"}
    assert await files_found(kb, DM) == {"public.txt", "dm.txt"}
    assert await files_found(kb, GROUP_DM) == {"public.txt", "group.txt"}
    assert await files_found(kb, PRIVATE, workspace_wide=False) == {"private.txt"}
    # The workspace's listing (the Home tab) names public documents only
    assert [d.filename for d in await kb.list_documents(Conversation("slack", "T1", "", ""), workspace_wide=True)] \
        == ["public.txt"]
    [private] = await kb.list_documents(PRIVATE, workspace_wide=False)
    assert private.visibility == "private"


async def test_a_private_thread_keeps_its_own_documents_and_reads_its_channels(make_kb):
    kb = make_kb(min_relevance=-1.0, min_evidence=-2.0)
    channel = Conversation("discord", "G1", "100", "100", visibility="public")
    thread = Conversation("discord", "G1", "100", "200", visibility="private", document_channel="200")
    await kb.ingest(upload(channel, "channel.txt", notes("3 March")))
    await kb.ingest(upload(thread, "thread.txt", notes("9 May")))
    assert await files_found(kb, channel) == {"channel.txt"}, "the parent channel never sees the thread's"
    assert await files_found(kb, thread) == {"channel.txt", "thread.txt"}
    assert [d.filename for d in await kb.list_documents(thread)] == ["channel.txt", "thread.txt"]
    assert (await kb.find_document(thread, "thread.txt")).channel == "200"
    assert await kb.find_document(channel, "thread.txt") is None


async def test_documents_from_before_visibility_learn_it_on_first_use(make_kb):
    kb = make_kb(min_relevance=-1.0, min_evidence=-2.0, workspace_scope=["T1"])
    legacy = dataclasses.replace(PUBLIC, visibility="unknown")
    await kb.ingest(upload(legacy, "public.txt", notes("3 March")))
    await kb.ingest(upload(dataclasses.replace(PRIVATE, visibility="unknown"), "private.txt", notes("9 May")))
    # Rewrite the store as Parley left it before visibility was recorded: no visibility, no pscope.
    for collection in (kb.store.chunks, kb.store.documents):
        got = collection.get(include=["metadatas", "embeddings", "documents"])
        collection.delete(ids=got["ids"])
        old = [{k: v for k, v in m.items() if k not in ("visibility", "pscope")} for m in got["metadatas"]]
        collection.add(ids=got["ids"], embeddings=got["embeddings"], documents=got["documents"], metadatas=old)
    kb.close()

    kb = make_kb(min_relevance=-1.0, min_evidence=-2.0, workspace_scope=["T1"])
    assert {r.visibility for r in kb.store.find_documents()} == {"unknown"}, "never public by default"
    assert await files_found(kb, ELSEWHERE) == set(), "unknown: only its own channel"
    assert await files_found(kb, legacy) == {"public.txt"}  # a use that does not say changes nothing
    assert await files_found(kb, ELSEWHERE) == set()
    assert await files_found(kb, PUBLIC) == {"public.txt"}  # the public channel says it is public
    assert await files_found(kb, PRIVATE) == {"public.txt", "private.txt"}
    assert await files_found(kb, ELSEWHERE) == {"public.txt"}
    assert {r.filename: r.visibility for r in kb.store.find_documents()} == {"public.txt": "public",
                                                                             "private.txt": "private"}
    # A channel made private later: its documents leave the workspace scope at its next use.
    assert await files_found(kb, dataclasses.replace(PUBLIC, visibility="private")) == {"public.txt"}
    assert await files_found(kb, ELSEWHERE) == set()
