"""The thread governor: all the cores on an idle machine, one thread while a neighbour makes
llama.cpp's spinning barriers stall, and back again, from step timings alone."""
from __future__ import annotations

from engine.runtime.thread_governor import PROBE_FIRST, ThreadGovernor


def run(governor: ThreadGovernor, steps: int, seconds_on) -> list[int]:
    """Drive `steps` decode steps of 16 rows; seconds_on(threads) is how long a step takes."""
    used = []
    for _ in range(steps):
        threads = governor.pick(16)
        used.append(threads)
        governor.record(threads, 16, seconds_on(threads))
    return used


def test_an_idle_machine_keeps_all_cores_and_probes_ever_less_often():
    governor = ThreadGovernor(2)
    used = run(governor, 2000, {2: 0.06, 1: 0.11}.get)
    assert governor.current == 2 and governor.switches == 0
    probes = [i for i, t in enumerate(used) if t == 1]
    assert probes and len(probes) <= 0.01 * len(used)  # 32, 64, 128... steps, or 16 s, apart
    assert all(b - a >= PROBE_FIRST for a, b in zip(probes, probes[1:]))


def test_a_busy_neighbour_moves_to_one_thread_within_seconds_and_back_when_it_leaves():
    governor = ThreadGovernor(2)
    run(governor, 100, {2: 0.06, 1: 0.11}.get)
    busy = run(governor, 20, {2: 1.5, 1: 0.12}.get)  # every 2-thread step stalls
    assert governor.current == 1  # noticed within seconds, not after dozens of slow steps
    assert busy[-10:].count(2) <= 2, busy  # then only the occasional probe stalls
    quiet = run(governor, 200, {2: 0.06, 1: 0.11}.get)
    assert governor.current == 2 and quiet[-10:] == [2] * 10


def test_one_core_means_one_thread():
    governor = ThreadGovernor(1)
    assert set(run(governor, 100, lambda t: 0.1)) == {1}
