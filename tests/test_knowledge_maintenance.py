"""Backup, restore, integrity check and the `bot.py knowledge` CLI, on real Chroma stores."""
from __future__ import annotations

import json

import pytest

import docgen
from conftest import make_config
from engine.knowledge import KnowledgeBase
from engine.knowledge.cli import knowledge_cli
from engine.types import Conversation, FileUpload, User

CHANNEL_A = Conversation("slack", "T1", "CA", "1")
CHANNEL_B = Conversation("discord", "G1", "CB", "2")
QUESTIONS = [(CHANNEL_A, f.question) for f in docgen.FACTS[:8]] + [(CHANNEL_B, f.question) for f in docgen.FACTS[8:14]]


async def fill(kb: KnowledgeBase) -> None:
    user = User("U1")
    docs = docgen.all_documents()
    for name in ("handbook.pdf", "policy.docx", "wiki.html"):
        await kb.ingest(FileUpload(where=CHANNEL_A, user=user, filename=name, data=docs[name]))
    for name in ("wiki.html", "runbook.md", "inventory.csv"):
        await kb.ingest(FileUpload(where=CHANNEL_B, user=user, filename=name, data=docs[name]))
    # a second version, so that the backup must hold only the live one
    await kb.ingest(FileUpload(where=CHANNEL_A, user=user, filename="policy.docx", data=docgen.simple_docx(
        "Passwords must be at least 16 characters long from now on.", docgen.FILLER[0])))


async def answers(kb: KnowledgeBase) -> list:
    return [[(p.file, p.page, p.version, p.text, round(p.score, 3)) for p in await kb.search(where, q)]
            for where, q in QUESTIONS]


async def test_backup_then_restore_gives_the_same_search_results(make_kb, tmp_path):
    source = make_kb("source")
    await fill(source)
    expected = await answers(source)
    assert sum(len(a) for a in expected) > 10
    summary = source.backup(tmp_path / "backup")
    assert summary["documents"] == 6
    assert summary["chunks"] == source.stats()["chunks"]
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["embedder"] == "all-MiniLM-L6-v2" and manifest["dimension"] == 384

    fresh = make_kb("fresh")  # a new server restored from the backup
    restored = fresh.restore(tmp_path / "backup")
    assert (restored["documents"], restored["chunks"]) == (6, summary["chunks"])
    assert await answers(fresh) == expected
    assert [d.filename for d in await fresh.list_documents(CHANNEL_A)] == ["handbook.pdf", "policy.docx", "wiki.html"]
    assert fresh.check()["ok"]

    # and in place: what was deleted after the backup comes back, what was added goes
    await source.delete_document(CHANNEL_A, "handbook.pdf")
    await source.ingest(FileUpload(where=CHANNEL_A, user=User("U1"), filename="notes.txt", data=docgen.notes_txt()))
    source.restore(tmp_path / "backup")
    assert await answers(source) == expected
    assert "notes.txt" not in [d.filename for d in await source.list_documents(CHANNEL_A)]
    # the restored store takes new documents as usual
    result = await source.ingest(FileUpload(where=CHANNEL_A, user=User("U1"), filename="policy.docx",
                                            data=docgen.policy_docx()))
    assert result.version == 3


async def test_a_damaged_or_foreign_backup_is_refused_and_the_store_kept(make_kb, tmp_path):
    kb = make_kb()
    await fill(kb)
    expected = await answers(kb)
    kb.backup(tmp_path / "backup")
    with pytest.raises(FileExistsError):  # never written over an existing backup
        kb.backup(tmp_path / "backup")
    chunks = tmp_path / "backup" / "chunks.jsonl"
    chunks.write_text(chunks.read_text().replace("Heron-5G", "Heron-6G"))
    with pytest.raises(ValueError, match="checksum"):
        kb.restore(tmp_path / "backup")
    with pytest.raises(ValueError, match="not a Parley knowledge backup"):
        kb.restore(tmp_path)
    assert await answers(kb) == expected


async def test_check_removes_orphans_and_incomplete_documents(make_kb, embedder):
    kb = make_kb()
    await fill(kb)
    clean = kb.check()
    assert clean["ok"] and clean["orphans"] == 0 and clean["broken_documents"] == []
    documents, chunks = kb.stats()["documents"], kb.stats()["chunks"]

    # an orphan: a chunk whose document was never registered (a crash mid-ingest)
    text = "Leftover text of an upload that never finished."
    meta = {"platform": "slack", "workspace": "T1", "channel": "CA", "file": "ghost.txt", "page": 0,
            "uploader": "U9", "uploaded_at": 0.0, "sha256": "f" * 64, "version": 1, "doc_id": "ghost", "chunk": 0}
    kb.store.add_chunks(["ghost-v1-0"], embedder.encode([text]), [text], [meta])
    # an incomplete document: one of its chunks lost
    wiki = next(r for r in kb.store.find_documents() if r.filename == "wiki.html" and r.channel == "CB")
    kb.store.delete_chunk_ids([kb.store.chunk_ids(wiki.doc_id)[0]])

    report = kb.check(repair=False)
    assert (report["ok"], report["orphans"], report["broken_documents"]) == (False, 1, ["discord/G1/CB/wiki.html"])
    assert kb.stats()["chunks"] == chunks  # report only: nothing changed

    repaired = kb.check()
    assert repaired["orphans"] == 1 and repaired["repaired"]
    assert kb.stats()["documents"] == documents - 1
    assert kb.stats()["chunks"] == chunks - wiki.chunks
    assert "ghost-v1-0" not in kb.store.chunk_ids("ghost")
    assert kb.check()["ok"]


async def test_cli_backup_restore_check_stats(tmp_path, embedder, capsys):
    config = make_config(tmp_path / "data")
    kb = KnowledgeBase(config.knowledge, config.data_path, embedder=embedder)
    await fill(kb)
    expected = await answers(kb)
    kb.close()

    assert knowledge_cli(config, ["stats"]) == 0
    assert "6 documents" in capsys.readouterr().out
    assert knowledge_cli(config, ["backup", str(tmp_path / "b1")]) == 0
    assert "Backed up 6 documents" in capsys.readouterr().out
    assert knowledge_cli(config, ["check"]) == 0
    assert "Everything is consistent" in capsys.readouterr().out

    other = make_config(tmp_path / "other")
    assert knowledge_cli(other, ["restore", str(tmp_path / "b1")]) == 0
    assert "Restored 6 documents" in capsys.readouterr().out
    assert knowledge_cli(other, ["--json", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 6
    restored = KnowledgeBase(other.knowledge, other.data_path, embedder=embedder)
    try:
        assert await answers(restored) == expected
    finally:
        restored.close()

    assert knowledge_cli(config, ["restore", str(tmp_path / "missing")]) == 1
    assert "not a Parley knowledge backup" in capsys.readouterr().out
    assert knowledge_cli(config, ["backup", str(tmp_path / "b1")]) == 1  # exists already
    assert knowledge_cli(config, ["frobnicate"]) == 2


async def test_a_store_from_before_scope_keys_gets_them_when_opened(make_kb):
    kb = make_kb()
    await fill(kb)
    before = await answers(kb)
    # Rewrite the store as an older Parley left it: the same entries without the scope keys.
    for collection in (kb.store.chunks, kb.store.documents):
        got = collection.get(include=["metadatas", "embeddings", "documents"])
        collection.delete(ids=got["ids"])
        old = [{k: v for k, v in m.items() if k not in ("scope", "wscope")} for m in got["metadatas"]]
        collection.add(ids=got["ids"], embeddings=got["embeddings"], documents=got["documents"], metadatas=old)
    kb.close()

    reopened = make_kb()
    assert all("scope" in m and "wscope" in m
               for m in reopened.store.chunks.get(include=["metadatas"])["metadatas"])
    assert await answers(reopened) == before
    assert [d.filename for d in await reopened.list_documents(CHANNEL_A)] == ["handbook.pdf", "policy.docx",
                                                                             "wiki.html"]
