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
