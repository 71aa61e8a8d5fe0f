"""Backup, restore and integrity check of the knowledge store.

A backup is a plain export through the VectorStore (in Chroma, through its API: not a copy of
its files, which an open client may be writing): manifest.json, documents.jsonl (the registry), chunks.jsonl (id, text,
metadata) and embeddings.npy (float32, one row per chunk line), with sha256 sums in the
manifest. It works the same against an embedded Chroma and a server. Only live documents are
exported. A restore hands the whole backup to VectorStore.replace_contents, which makes it the
store's contents all or nothing, so a restore that fails leaves the store as it was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from engine.knowledge.attempts import Attempt, live_attempts
from engine.knowledge.vector_store import ChunkPage, DocumentRecord, VectorStore

log = logging.getLogger(__name__)

FORMAT = "parley-knowledge-backup"
FORMAT_VERSION = 1
_FILES = ("documents.jsonl", "chunks.jsonl", "embeddings.npy")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def backup(store: VectorStore, target: Path, *, embedder_name: str) -> dict:
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty; choose a new directory for the backup")
    started = time.perf_counter()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    records = {r.doc_id: r for r in store.find_documents()}
    vectors: list[np.ndarray] = []
    count = 0
    with open(staging / "chunks.jsonl", "w", encoding="utf-8") as out:
        for page in store.iter_chunks(texts=True, embeddings=True):
            keep = [i for i, m in enumerate(page.metadatas)
                    if m.get("doc_id") in records and int(m.get("version", -1)) == records[m["doc_id"]].version]
            for i in keep:
                out.write(json.dumps({"id": page.ids[i], "text": page.texts[i],
                                      "metadata": page.metadatas[i]}, ensure_ascii=False) + "\n")
            if keep:
                vectors.append(np.asarray(page.embeddings, dtype=np.float32)[keep])
            count += len(keep)
    with open(staging / "documents.jsonl", "w", encoding="utf-8") as out:
        for r in records.values():
            out.write(json.dumps({"id": r.doc_id, "metadata": r.metadata()}, ensure_ascii=False) + "\n")
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    np.save(staging / "embeddings.npy", matrix)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created_at": time.time(),
                "embedder": embedder_name, "dimension": int(matrix.shape[1]) if count else 0,
                "documents": len(records), "chunks": count,
                "sha256": {name: _sha256(staging / name) for name in _FILES}}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if target.exists():
        target.rmdir()
    os.replace(staging, target)
    seconds = round(time.perf_counter() - started, 2)
    log.info("knowledge backup written", extra={"path": str(target), "documents": len(records),
                                                "chunks": count, "seconds": seconds})
    return {"path": str(target), "documents": len(records), "chunks": count, "seconds": seconds}


def read_backup(source: Path, *, embedder_name: str) -> tuple[dict, list[dict], list[dict], np.ndarray]:
    """Validate and load a backup; raises ValueError saying what is wrong with it."""
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{source} holds no manifest.json: not a Parley knowledge backup")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source}: unknown backup format {manifest.get('format')!r} "
                         f"version {manifest.get('format_version')!r}")
    if manifest.get("embedder") != embedder_name:
        raise ValueError(f"{source} was made with embeddings of {manifest.get('embedder')!r}, "
                         f"this server uses {embedder_name!r}")
    for name in _FILES:
        if _sha256(source / name) != manifest["sha256"][name]:
            raise ValueError(f"{source / name} does not match its checksum: the backup is damaged")
    with open(source / "documents.jsonl", encoding="utf-8") as f:
        documents = [json.loads(line) for line in f if line.strip()]
    with open(source / "chunks.jsonl", encoding="utf-8") as f:
        chunks = [json.loads(line) for line in f if line.strip()]
    vectors = np.load(source / "embeddings.npy")
    if len(chunks) != manifest["chunks"] or len(documents) != manifest["documents"] or \
            (chunks and vectors.shape[0] != len(chunks)):
        raise ValueError(f"{source}: counts do not match the manifest")
    return manifest, documents, chunks, vectors


def restore(store: VectorStore, source: Path, *, embedder_name: str) -> dict:
    started = time.perf_counter()
    manifest, documents, chunks, vectors = read_backup(source, embedder_name=embedder_name)
    records = [DocumentRecord.from_metadata(d["id"], d["metadata"]) for d in documents]
    rows = ChunkPage(ids=[c["id"] for c in chunks], metadatas=[c["metadata"] for c in chunks],
                     texts=[c["text"] for c in chunks], embeddings=vectors)
    store.replace_contents(records, rows)
    seconds = round(time.perf_counter() - started, 2)
    log.info("knowledge restored", extra={"path": str(source), "documents": len(documents),
                                          "chunks": len(chunks), "seconds": seconds})
    return {"path": str(source), "documents": len(documents), "chunks": len(chunks), "seconds": seconds,
            "backup_created_at": manifest["created_at"]}


def check(store: VectorStore, *, repair: bool = True, lease_s: float = 60.0) -> dict:
    """Every chunk must have a finite unit embedding and belong to the live version of a
    registered document, and every document must have all its chunks. With repair, orphan
    chunks are deleted and broken documents removed (their names are reported, to re-share).

    Chunks of a live ingest attempt (attempts.py: it beat within `lease_s`), on this replica or
    another, are in progress, not orphans; before anything is removed the attempts and then the
    registry are read again, so an attempt that registered during the scan keeps its chunks."""
    started = time.perf_counter()
    records = {r.doc_id: r for r in store.find_documents()}
    alive = live_attempts(store, lease_s)
    orphans: list[tuple[str, str, int, str]] = []  # (chunk id, doc_id, version, attempt)
    bad_vectors: list[str] = []
    live_counts: dict[str, int] = {}
    dimension = None
    total = 0
    in_progress = 0
    for page in store.iter_chunks(embeddings=True):
        vectors = page.embeddings
        for i, (cid, meta) in enumerate(zip(page.ids, page.metadatas)):
            total += 1
            meta = meta or {}
            doc = records.get(meta.get("doc_id"))
            if doc is None or int(meta.get("version", -1)) != doc.version:
                if meta.get("attempt") in alive:
                    in_progress += 1
                else:
                    orphans.append((cid, str(meta.get("doc_id")), int(meta.get("version", -1)),
                                    str(meta.get("attempt", ""))))
                continue
            vector = None if vectors is None else np.asarray(vectors[i], dtype=np.float32)
            dimension = dimension or (None if vector is None else vector.shape[0])
            if vector is None or vector.shape[0] != dimension or not np.all(np.isfinite(vector)) \
                    or abs(float(np.linalg.norm(vector)) - 1.0) > 0.05:
                bad_vectors.append(cid)
                continue
            live_counts[doc.doc_id] = live_counts.get(doc.doc_id, 0) + 1
    broken = [r for r in records.values() if live_counts.get(r.doc_id, 0) != r.chunks]
    dead = 0
    if repair:
        orphans = _still_orphans(store, orphans, lease_s)
        store.delete_chunk_ids([o[0] for o in orphans])
        broken = [doc for doc in broken if _remove_broken(store, doc, lease_s)]
        dead = _forget_dead_attempts(store, lease_s)
    result = {"documents": len(records), "chunks": total, "orphans": len(orphans), "in_progress": in_progress,
              "dead_attempts": dead,
              "bad_embeddings": len(bad_vectors),
              "broken_documents": [f"{d.platform}/{d.workspace}/{d.channel}/{d.filename}" for d in broken],
              "repaired": repair, "ok": not (orphans or bad_vectors or broken),
              "seconds": round(time.perf_counter() - started, 2)}
    log.info("knowledge check", extra={k: v for k, v in result.items() if k != "broken_documents"})
    return result


def _still_orphans(store: VectorStore, orphans: list[tuple[str, str, int, str]],
                   lease_s: float) -> list[tuple[str, str, int, str]]:
    """The orphans found by the scan that are orphans still: attempts read before the registry,
    so an attempt that ended by registering is seen in one or the other."""
    if not orphans:
        return orphans
    alive = live_attempts(store, lease_s)
    live = {r.doc_id: r.version for r in store.find_documents()}
    return [o for o in orphans if o[3] not in alive and live.get(o[1]) != o[2]]


def _forget_dead_attempts(store: VectorStore, lease_s: float) -> int:
    """Remove the records and claims of attempts that stopped beating (their processes were killed);
    their chunks went above. Returns how many attempts were dead."""
    now = time.time()
    dead = [attempt for attempt, beat in store.attempt_beats().items() if now - beat > lease_s]
    for attempt in dead:
        store.end_attempt(attempt)
    claims = store.claims()  # before the live attempts: an attempt beats before it claims
    alive = live_attempts(store, lease_s)
    for doc_id, holder in claims.items():
        if holder not in alive:
            store.release(doc_id, holder)
    return len(dead)


def _remove_broken(store: VectorStore, doc: DocumentRecord, lease_s: float) -> bool:
    """Remove a document missing chunks, holding its claim, if it is still the version found
    broken (an ingest of a new version, here or on another replica, is left to finish)."""
    with Attempt(store, lease_s) as attempt:
        if not attempt.try_claim(doc.doc_id):
            return False
        current = store.get_document(doc.doc_id)
        if current is None or current.version != doc.version:
            return False
        store.unregister(doc.doc_id)
        store.delete_document_chunks(doc.doc_id)
    log.warning("broken document removed", extra={"file": doc.filename, "doc_id": doc.doc_id, "expected": doc.chunks})
    return True
