"""CPU threading: each long-lived torch thread keeps the thread count it chose (engine/runtime/cpu.py)."""
from __future__ import annotations

import threading

import torch

from engine.runtime.cpu import generation_threads, use_threads


def test_a_thread_keeps_its_count_when_another_thread_sets_a_different_one():
    chose, other_set, seen = threading.Event(), threading.Event(), []

    def embedder_like():
        use_threads(1)
        chose.set()
        other_set.wait(10)
        torch.randn(512, 512).sum()  # its first parallel op comes after the other thread's setting
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=embedder_like)
    worker.start()
    chose.wait(10)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, before))  # the generation worker, starting later
        other_set.set()
        worker.join(10)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_generation_leaves_a_multi_threaded_embedder_its_cores(monkeypatch):
    monkeypatch.setattr("engine.runtime.cpu.cpu_count", lambda: 16)
    assert generation_threads(0, 4) == 12
    assert generation_threads(0, 1) == 16  # one embedding thread holds no pool
    assert generation_threads(6, 4) == 6


def test_a_question_is_embedded_while_an_ingest_batch_runs_and_ingests_yield_the_cpu(embedder):
    """A search's embedding never waits behind an ingest's batches (bench/abuse.py: 1.1 s behind
    them before), and an ingest's batches run at a lower CPU priority than the answering threads."""
    import os

    from engine.knowledge.embedder import INGEST_NICE

    real_encode = embedder.model.encode
    inside = threading.Event()
    release = threading.Event()
    seen: dict[str, int] = {}

    def encode(texts, **kwargs):
        name = threading.current_thread().name
        seen[name.rsplit("_", 1)[0]] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if name.startswith("embed-ingest") and texts:
            inside.set()
            release.wait(30)  # an ingest batch that takes its time
        return real_encode(texts, **kwargs)

    embedder.model.encode = encode
    ingest = threading.Thread(target=lambda: embedder.encode(["a chunk of a document"] * 8, busy=lambda: True))
    try:
        ingest.start()
        assert inside.wait(30), "the ingest's batch started"
        done = threading.Event()
        vectors = []
        asker = threading.Thread(target=lambda: (vectors.append(embedder.encode_query("who is on call?")), done.set()))
        asker.start()
        assert done.wait(20), "the question's embedding waited for the ingest's batch"
        assert vectors[0].shape == (embedder.dimension,)
    finally:
        release.set()
        ingest.join(30)
        del embedder.model.encode
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["embed"] == base and seen["embed-ingest"] >= min(19, base + INGEST_NICE), seen


def test_a_slow_ingest_while_answers_stream_does_not_shrink_the_largest_file_accepted(embedder):
    """The size limit follows the embedder's best measured speed: an ingest slowed down because it
    yields the cores to answering must not make the next 2 MB file FILE_TOO_LARGE."""
    import time as clock

    from engine.config import KnowledgeConfig
    from engine.knowledge.ingesting import chunk_limit

    texts = [f"chunk {i} of a document" for i in range(4 * embedder.batch_size)]
    embedder.encode(texts, busy=lambda: False)
    limit, best = chunk_limit(KnowledgeConfig(), embedder)
    real_encode = embedder.model.encode

    def crawling(batch, **kwargs):  # the cores busy with answers: each batch waits its turn
        clock.sleep(0.2)
        return real_encode(batch, **kwargs)

    embedder.model.encode = crawling
    try:
        embedder.encode(texts, busy=lambda: True)
    finally:
        del embedder.model.encode
    assert chunk_limit(KnowledgeConfig(), embedder) == (limit, best)
