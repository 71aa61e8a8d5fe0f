"""Uploaded files are read in parse worker processes, so that no file can take the bot down.

PDFium is native code, python-docx expands zip members whole, a BeautifulSoup tree takes many
times its HTML: one hostile file could exhaust the bot's memory, hang a thread forever or crash
the process, for every platform at once. Here a file is read by a worker process
(parse_worker.py) under limits (ParseLimits, `knowledge.parse_*`):

- memory: RLIMIT_AS in the worker, and its resident size watched from here;
- CPU time: RLIMIT_CPU in the worker, re-armed per file;
- wall-clock time: a deadline per file and, for a PDF, per page, enforced from here: a worker
  past one is killed.

Pages read flow back as they are read (the progress message moves); the ingest's `check` is
polled while waiting, so a cancel kills the worker at once. A crash (PDFium's segfault, an
abort), a hang or a memory blow-up fails that one file with a coded ParleyError; the worker is
replaced and the next file is read by a fresh one.

Workers are plain `python -m engine.knowledge.parse_worker` processes, spawned (subprocess
forks nothing of this threaded process but an exec at once), reused across files, and a
replacement is started as soon as one is killed. Measured on a 2-core EPYC VM: a fresh worker is
ready in 0.18-0.24 s (0.5-0.9 s while other jobs loaded the machine: the interpreter and the
parsers' imports), so reuse matters; a warm worker reads the 114-page Developer's Reference in
0.615 s where the bot's own thread takes 0.599 s (medians of 15, interleaved), the 100-page
generated PDF in 0.099 s against 0.099 s (JSON both ways: under 2 ms). multiprocessing's spawn
and forkserver contexts were not used: both re-run the parent's main script in every worker
(bot.py's imports, a benchmark's torch), where this imports only the parsers.

What a worker sends is JSON and checked here, never unpickled: a worker that read a hostile
file could have been subverted, and its answer must not run code in the bot.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from engine.errors import ErrorCode, ParleyError
from engine.knowledge import loaders
from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.parse_protocol import WorkerGone, count, counts, decode_document, number, reported_error
from engine.knowledge.records import LoadedDocument

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]
Check = Callable[[], None]  # raises to stop (the ingest's cancel)
ROOT = Path(__file__).resolve().parents[2]  # where `engine` is importable from
POLL_S = 0.1  # how often a waiting read looks at its deadlines and its cancel
READY_TIMEOUT_S = 120.0  # a worker's start: the interpreter and the parsers' imports
RECYCLE_MB = 256  # a worker whose peak resident size passed this is replaced after its file
REPLY_SLACK = 16 * 2**20  # bytes of a worker's answer beyond twice the text a file may yield
_ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH",
             "VIRTUAL_ENV", "PARLEY_PARSE_PLUGINS")


def read_document(kind: str, filename: str, data: bytes, limits: ParseLimits, *,
                  on_page: PageCallback | None = None, check: Check | None = None) -> LoadedDocument:
    """The text of a sniffed file, read in a parse worker (or here, when limits.sandbox is off)."""
    if not limits.sandbox:
        return loaders.load(kind, filename, data, on_page=on_page, limits=limits)
    return shared().read(kind, filename, data, limits, on_page or (lambda done, total: None),
                         check or (lambda: None))


class AnswerTooLarge(WorkerGone):
    """The worker's answer was longer than what the file may yield."""


class _Reported(Exception):
    """The worker answered with an error; `reusable`: it reads the next file too."""

    def __init__(self, error: ParleyError, reusable: bool):
        super().__init__(error.user_message)
        self.error = error
        self.reusable = reusable


class Worker:
    """One parse worker process and the two pipes to it."""

    def __init__(self) -> None:
        worker_in, our_out = os.pipe()  # not inherited by other children (PEP 446); pass_fds gives them
        our_in, worker_out = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.knowledge.parse_worker", str(worker_in), str(worker_out)],
                pass_fds=(worker_in, worker_out), cwd=ROOT, env=_worker_env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            os.close(our_out)
            os.close(our_in)
            raise
        finally:
            os.close(worker_in)
            os.close(worker_out)
        self.outbox = Connection(our_out, readable=False)
        self.inbox = Connection(our_in, writable=False)
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a process stuck in the kernel: leave it to the OS
            log.warning("parse worker did not end", extra={"pid": self.pid})
        for connection in (self.outbox, self.inbox):
            connection.close()

    def resident_mb(self) -> float:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            return 0.0

    def receive(self, timeout: float, limit: int) -> dict[str, Any] | None:
        """The worker's next message, None when none came within `timeout`."""
        try:
            if not self.inbox.poll(timeout):
                return None
            message = json.loads(self.inbox.recv_bytes(limit))
        except EOFError:
            raise WorkerGone("ended")
        except OSError as exc:  # recv_bytes past `limit`: "bad message length"
            raise AnswerTooLarge(f"answer past {limit} bytes ({exc})")
        except ValueError as exc:
            raise WorkerGone(f"not JSON ({exc})")
        if not isinstance(message, dict):
            raise WorkerGone("not a message")
        return message

    def await_ready(self, check: Check) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready:
            check()
            message = self.receive(POLL_S, 1024)
            if message is not None:
                self.ready = message.get("t") == "ready"
                if not self.ready:
                    raise WorkerGone(f"said {message.get('t')!r} before it was ready")
            elif time.monotonic() > deadline:
                raise WorkerGone("never ready")


@dataclasses.dataclass
class _Reading:
    """One file being read by one worker: its limits and the clocks they run on."""

    worker: Worker
    kind: str
    filename: str
    limits: ParseLimits
    started: float = dataclasses.field(default_factory=time.monotonic)
    last_page: float = dataclasses.field(default_factory=time.monotonic)
    paged: bool = False  # a page was reported: the per-page budget runs from there, whatever the kind

    def overdue(self, now: float) -> str:
        """What limit the worker is past, or ""."""
        if now - self.started > self.limits.timeout_seconds:
            return f"took more than {self.limits.timeout_seconds:g} seconds to read"
        if (self.kind == "pdf" or self.paged) and now - self.last_page > self.limits.page_seconds:
            return f"took more than {self.limits.page_seconds:g} seconds to read one page"
        if self.worker.resident_mb() > self.limits.memory_mb:
            return f"needed more than {self.limits.memory_mb:,} MB of memory to read"
        return ""


class ParseSandbox:
    """Parse workers, reused across files; at most `limits.workers` read at once (a read waits
    for a free one, its cancel still heard)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._busy = 0
        self._closed = False

    def read(self, kind: str, filename: str, data: bytes, limits: ParseLimits, on_page: PageCallback,
             check: Check) -> LoadedDocument:
        worker = self._acquire(limits.workers, check)
        keep = False
        try:
            worker.await_ready(check)
            reading = _Reading(worker, kind, filename, limits)
            document, keep = self._run(reading, data, on_page, check)
            return document
        except _Reported as reported:
            keep = reported.reusable
            raise reported.error from None
        except AnswerTooLarge:
            raise too_complex(filename, "reads as more text than I take from one file") from None
        except WorkerGone as gone:
            raise self._failure(worker, filename, limits, gone.reason) from None
        finally:
            self._release(worker, keep)

    def _run(self, reading: _Reading, data: bytes, on_page: PageCallback,
             check: Check) -> tuple[LoadedDocument, bool]:
        worker = reading.worker
        request = {"kind": reading.kind, "name": reading.filename, "limits": dataclasses.asdict(reading.limits)}
        try:
            worker.outbox.send_bytes(json.dumps(request).encode())
            worker.outbox.send_bytes(data)
        except OSError:
            raise WorkerGone("ended before it took the file")
        reply_limit = 2 * reading.limits.text_budget(len(data)) + REPLY_SLACK
        while True:
            check()
            message = worker.receive(POLL_S, reply_limit)
            now = time.monotonic()
            if message is None:
                overdue = reading.overdue(now)
                if overdue:
                    log.warning("parse worker killed", extra={"file": reading.filename, "pid": worker.pid,
                                                              "reason": overdue})
                    raise too_complex(reading.filename, overdue)
                continue
            kind = message.get("t")
            if kind == "pages":
                reading.last_page = now
                reading.paged = True
                total = count(message, "total")
                for done in counts(message, "done"):
                    on_page(done, total)
            elif kind == "done":
                document = decode_document(message.get("document"), reading.kind)
                return document, number(message.get("peak_mb")) <= RECYCLE_MB and not message.get("last")
            elif kind == "error":
                reusable = "limit" not in message and "failure" not in message and not message.get("last")
                raise _Reported(reported_error(message, reading.filename, reading.limits), reusable)
            else:
                raise WorkerGone(f"sent {kind!r}")

    def _failure(self, worker: Worker, filename: str, limits: ParseLimits, reason: str) -> ParleyError:
        """The coded error for a worker that ended or broke off while reading `filename`."""
        try:
            code = worker.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        log.warning("parse worker failed", extra={"file": filename, "pid": worker.pid, "reason": reason,
                                                  "exit": code})
        if self._closed:  # its end was ours: the bot is stopping
            return ParleyError(ErrorCode.SHUTTING_DOWN)
        if code == -signal.SIGXCPU:
            return too_complex(filename, f"needed more than {limits.cpu_seconds:g} seconds of CPU time to read")
        if code == -signal.SIGKILL:  # the kernel's OOM killer (ours would have been a limit above)
            return too_complex(filename, "needed more memory to read than this server has free")
        if not worker.ready:
            return ParleyError(ErrorCode.INTERNAL, f"I could not start the reader for {filename}.")
        return ParleyError(ErrorCode.FILE_UNREADABLE,
                           f"{filename} made the document reader fail; it may be damaged. Open it, save "
                           "it again (or export it as PDF) and share it again.")

    # ---- the pool ----------------------------------------------------------------------------

    def _acquire(self, most: int, check: Check) -> Worker:
        with self._lock:
            while self._busy >= most and not self._closed:
                check()  # a cancel while waiting for a free worker
                self._lock.wait(POLL_S)
            if self._closed:
                raise ParleyError(ErrorCode.SHUTTING_DOWN)
            self._busy += 1
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._all.discard(worker)
                worker.kill()
        try:
            return self._start()
        except BaseException:
            with self._lock:
                self._busy -= 1
                self._lock.notify()
            raise

    def _release(self, worker: Worker, keep: bool) -> None:
        if not keep:
            worker.kill()
        with self._lock:
            self._busy -= 1
            if keep and not self._closed:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
                if not self._closed and not self._idle:
                    self._idle.append(self._start_locked())  # warm for the next file
            self._lock.notify()

    def _start(self) -> Worker:
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> Worker:
        worker = Worker()
        self._all.add(worker)
        return worker

    def warm(self) -> None:
        """Start a worker now, so the first file does not wait for one."""
        with self._lock:
            if not self._idle and not self._closed:
                self._idle.append(self._start_locked())

    def workers(self) -> list[int]:
        """The pids of the worker processes alive now."""
        with self._lock:
            return [w.pid for w in self._all if w.alive()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()


def _worker_env() -> dict[str, str]:
    """The worker's environment: what Python and the locale need, none of the bot's secrets."""
    env = {key: os.environ[key] for key in _ENV_KEPT if key in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_shared: ParseSandbox | None = None
_shared_lock = threading.Lock()


def shared() -> ParseSandbox:
    """The process's parse workers (started on first use, ended at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ParseSandbox()
            atexit.register(_shared.close)
        return _shared


def restart() -> None:
    """End the process's parse workers; the next read starts fresh ones (with the environment as
    it is then)."""
    global _shared
    with _shared_lock:
        old = _shared
        _shared = None
    if old is not None:
        old.close()
