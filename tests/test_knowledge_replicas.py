"""Replicas sharing a real Chroma server (`chroma run`): two KnowledgeBases, each with its own
client and write lock as two bot processes have, ingest the same file name at once and leave one
consistent document; an attempt killed mid-ingest (its heartbeat stale) is cleaned up by the
leader's check while a live attempt's chunks are left alone; only one replica leads the check."""
from __future__ import annotations

import asyncio
import time

import pytest

import docgen
from engine.config import ChromaConfig, KnowledgeConfig, MaintenanceConfig
from engine.knowledge import KnowledgeBase
from engine.knowledge.attempts import Attempt
from engine.leader import LocalLeader, RedisLeader
from engine.maintenance import Maintenance
from engine.types import Conversation, FileUpload, User
from ops_servers import chroma_server, redis_server

pytestmark = pytest.mark.timeout(300)

ADA = User("U1", "ada")
BEA = User("U2", "bea")
CHANNEL = Conversation("slack", "T1", "C1", "1.0", visibility="public")
LEASE_S = 2.0


def replica(tmp_path, name: str, host: str, port: int, embedder) -> KnowledgeBase:
    config = KnowledgeConfig(chroma=ChromaConfig(mode="http", host=host, port=port), ingest_lease_seconds=LEASE_S,
                             parse_sandbox=False)
    return KnowledgeBase(config, tmp_path / name, embedder=embedder, load_embedder=False)


def slow_writes(kb: KnowledgeBase, seconds: float) -> None:
    """The replica's chunk writes take `seconds` longer (a big document): the other arrives meanwhile."""
    add = kb.store.add_chunks

    def add_slowly(*args, **kwargs):
        add(*args, **kwargs)
        time.sleep(seconds)

    kb.store.add_chunks = add_slowly


def upload(name: str, data: bytes, user: User = ADA) -> FileUpload:
    return FileUpload(where=CHANNEL, user=user, filename=name, data=data)


def consistent(kb: KnowledgeBase) -> None:
    """Every registered document has exactly its live version's chunks, nothing else is stored."""
    report = kb.check(repair=False)
    assert report["ok"] and report["orphans"] == 0 and report["in_progress"] == 0, report
    assert sum(d.chunks for d in kb.list_documents_sync(CHANNEL)) == kb.stats()["chunks"]


async def test_two_replicas_ingesting_one_name_at_once_leave_one_document(tmp_path, embedder):
    notes = docgen.notes_txt()
    with chroma_server(tmp_path / "chroma") as (host, port):
        first = replica(tmp_path, "bot1", host, port, embedder)
        second = replica(tmp_path, "bot2", host, port, embedder)
        try:
            slow_writes(first, 1.5)
            # The same person shares two edits of report.txt on two replicas at once: they take turns,
            # and the one stored second is the live version, as when one process gets both.
            one, two = await asyncio.gather(first.ingest(upload("report.txt", notes)),
                                            second.ingest(upload("report.txt", notes + b"\n\nAn added line.")))
            assert sorted([one.version, two.version]) == [1, 2] and not (one.duplicate or two.duplicate)
            docs = second.list_documents_sync(CHANNEL)
            assert [(d.filename, d.version) for d in docs] == [("report.txt", 2)]
            consistent(first)
            # Two people share a file of the same name at once: two documents, the later one numbered.
            slow_writes(second, 1.5)
            mine, theirs = await asyncio.gather(second.ingest(upload("plan.txt", b"Plan A: the Leeds office.")),
                                                first.ingest(upload("plan.txt", b"Plan B: Bristol.", BEA)))
            assert sorted([mine.filename, theirs.filename]) == ["plan (2).txt", "plan.txt"]
            # The same content at once: one document, the other upload told it is a duplicate.
            same = await asyncio.gather(first.ingest(upload("memo.txt", b"Lunch is at noon.")),
                                        second.ingest(upload("memo.txt", b"Lunch is at noon.")))
            assert sorted(r.duplicate for r in same) == [False, True]
            assert sorted(d.filename for d in first.list_documents_sync(CHANNEL)) == \
                ["memo.txt", "plan (2).txt", "plan.txt", "report.txt"]
            consistent(second)
        finally:
            first.close()
            second.close()


async def test_a_delete_on_one_replica_waits_for_an_ingest_on_another(tmp_path, embedder):
    with chroma_server(tmp_path / "chroma") as (host, port):
        first = replica(tmp_path, "bot1", host, port, embedder)
        second = replica(tmp_path, "bot2", host, port, embedder)
        try:
            await first.ingest(upload("report.txt", docgen.notes_txt()))
            slow_writes(first, 1.5)
            ingest = asyncio.create_task(first.ingest(upload("report.txt", docgen.notes_txt() + b"\n\nRevised.")))
            while not first.store.claims():  # the new version is being stored
                await asyncio.sleep(0.02)
            removed = await second.delete_document(CHANNEL, "report.txt")
            result = await ingest  # the ingest was not broken by the delete: it finished first
            assert result.version == 2 and removed == result.chunks  # then the delete took the new version
            assert first.list_documents_sync(CHANNEL) == [] and first.stats()["chunks"] == 0
        finally:
            first.close()
            second.close()


def killed_attempt(kb: KnowledgeBase, doc_id: str, text: str) -> str:
    """What `kill -9` mid-ingest leaves: an attempt record that no longer beats, its document's
    claim, and chunks of the version it was writing, never registered."""
    attempt = Attempt(kb.store, LEASE_S)
    kb.store.beat(attempt.id, doc_id)
    assert kb.store.claim(doc_id, attempt.id) == attempt.id
    meta = {"platform": "slack", "workspace": "T1", "channel": "C1", "file": "report.txt", "page": 0,
            "uploader": ADA.id, "uploaded_at": 0.0, "sha256": "0" * 64, "version": 2, "doc_id": doc_id,
            "chunk": 0, "attempt": attempt.id}
    kb.store.add_chunks([f"{doc_id}-v2-{attempt.id[:12]}-0"], kb.embedder.encode([text]), [text], [meta])
    return attempt.id


async def test_the_leader_cleans_up_a_dead_attempt_and_leaves_a_live_one(tmp_path, embedder):
    with chroma_server(tmp_path / "chroma") as (host, port), redis_server(tmp_path / "redis") as url:
        first = replica(tmp_path, "bot1", host, port, embedder)
        second = replica(tmp_path, "bot2", host, port, embedder)
        leaders = [RedisLeader.from_url(url, "parley:test:leader:") for _ in range(2)]
        jobs = [Maintenance(_maintenance(), monitor=None, sessions=None, knowledge=kb,
                            idle_expiry_hours=1.0, leader=leader) for kb, leader in zip((first, second), leaders)]
        try:
            report = await first.ingest(upload("report.txt", docgen.notes_txt()))
            doc_id = first.store.find_documents()[0].doc_id
            dead = killed_attempt(second, doc_id, "A half-written second version of the report.")
            # A live attempt on the other replica, at another document: it beats while the check runs.
            with Attempt(first.store, LEASE_S) as live:
                live.try_claim("another-doc")
                meta = {"platform": "slack", "workspace": "T1", "channel": "C1", "file": "new.txt", "page": 0,
                        "uploader": BEA.id, "uploaded_at": 0.0, "sha256": "1" * 64, "version": 1,
                        "doc_id": "another-doc", "chunk": 0, "attempt": live.id}
                text = "An upload still being stored on the other replica."
                first.store.add_chunks([f"another-doc-v1-{live.id[:12]}-0"], embedder.encode([text]), [text], [meta])
                await asyncio.sleep(LEASE_S + 0.5)  # the killed attempt's heartbeat is now stale
                results = await asyncio.gather(*(job.check_knowledge() for job in jobs))
                led = [r for r in results if "skipped" not in r]
                assert len(led) == 1, results  # one replica led the check, the other left it
                assert led[0]["orphans"] == 1 and led[0]["in_progress"] == 1 and not led[0]["broken_documents"]
                assert led[0]["dead_attempts"] == 1 and first.store.claims() == {"another-doc": live.id}
                assert first.store.chunk_ids("another-doc")  # the live attempt's chunk is still there
                assert all(attempt != dead for _, _, attempt in first.store.chunk_attempts(doc_id))
            # The dead attempt's claim does not block the document: the next upload of it goes through.
            again = await second.ingest(upload("report.txt", docgen.notes_txt() + b"\n\nRevised."))
            assert again.version == report.version + 1
            assert [(d.filename, d.version) for d in first.list_documents_sync(CHANNEL)] == [("report.txt", 2)]
        finally:
            for job in jobs:
                await job.stop()
            first.close()
            second.close()


def _maintenance() -> MaintenanceConfig:
    return MaintenanceConfig()


async def test_one_process_runs_one_check_at_a_time():
    leader = LocalLeader()
    async with leader.lead("knowledge-check") as outer:
        async with leader.lead("knowledge-check") as inner:
            assert (outer, inner) == (True, False)
    async with leader.lead("knowledge-check") as later:
        assert later
