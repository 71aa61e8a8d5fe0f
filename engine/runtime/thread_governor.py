"""How many threads llama.cpp computes a decode step on: all the cores, unless fewer are faster now.

llama.cpp's threads meet at a barrier after every operation of a step (some 600 of them), and
wait there by spinning. When another process wants one of the cores (the embedder indexing a
file, a backup, a noisy neighbour on a small VM), a descheduled thread makes every barrier
wait for a time slice. Measured on 2 cores with one core busy elsewhere: a 16-row step took
1.2-3 s on 2 threads and 0.12 s on 1, where on an idle machine 2 threads take 0.06 s.

So the governor runs on all the cores and now and then times one step on a single thread,
against the step just before it with the same rows: whichever was faster becomes the count.
A probe comes after 8 steps or 2 seconds, whichever is first; one that loses waits twice as
long before the next (up to 1,024 steps or 16 s), so on an idle machine probing costs under 2%
and a busy spell is noticed within 16 s even when it makes every step slow.
"""
from __future__ import annotations

PROBE_FIRST = 8  # steps between probes after a change (a short answer is a few dozen)
PROBE_LAST = 1024  # the longest wait between probes
SECONDS_PER_STEP = 0.25  # ...or this many seconds per step of the wait, whichever comes first,
MAX_WAIT_S = 16.0  # and never more than this many seconds
MARGIN = 0.9  # a probe must be at least 10% faster to win


class ThreadGovernor:
    def __init__(self, most: int) -> None:
        self.most = max(1, most)
        self.current = self.most
        self.switches = 0
        self._interval = PROBE_FIRST
        self._countdown = PROBE_FIRST
        self._time_left = PROBE_FIRST * SECONDS_PER_STEP
        self._last: tuple[int, float] | None = None  # (rows, seconds) of the last ordinary step

    @property
    def other(self) -> int:
        return 1 if self.current == self.most else self.most

    def pick(self, rows: int) -> int:
        """Threads for the next decode step of `rows` rows."""
        if self.most == 1:
            return 1
        self._countdown -= 1
        due = self._countdown <= 0 or self._time_left <= 0
        if due and self._last is not None and self._last[0] == rows:
            return self.other
        return self.current

    def record(self, threads: int, rows: int, seconds: float) -> None:
        if self.most == 1:
            return
        if threads == self.current:
            self._last = (rows, seconds)
            self._time_left -= seconds
            return
        won = self._last is not None and self._last[0] == rows and seconds < MARGIN * self._last[1]
        if won:
            self.current = threads
            self.switches += 1
            self._interval = PROBE_FIRST
        else:
            self._interval = min(2 * self._interval, PROBE_LAST)
        self._countdown = self._interval
        self._time_left = min(self._interval * SECONDS_PER_STEP, MAX_WAIT_S)
        self._last = None
