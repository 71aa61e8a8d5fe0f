"""The parse worker: a process of its own that reads uploaded files for the bot (sandbox.py).

Started as `python -m engine.knowledge.parse_worker IN_FD OUT_FD`, it imports the parsers once
and reads file after file, each under the limits its request carries: the address space
(RLIMIT_AS: an allocation past it raises MemoryError, answered and then this process exits) and
CPU time (RLIMIT_CPU, re-armed per file: past it the kernel ends the process with SIGXCPU). No
core files are written. The bot enforces the wall-clock limits and kills what does not answer.

Messages are JSON, never pickles: the bot must not run code that a process which read hostile
bytes could have chosen. The bot sends a request ({"kind", "name", "limits"}) and then the file's
bytes; this process answers {"t": "pages", "done": [...], "total"} as pages are read, then {"t": "done",
"document"} or {"t": "error", "code", "message"}, with "last": true when it ends after this file.

PARLEY_PARSE_PLUGINS (comma-separated module names) are imported at start; such a module may add
loader kinds to loaders.LOADERS (the tests add ones that hang, crash or eat memory).
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from engine.errors import ErrorCode, ParleyError
from engine.knowledge import loaders
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.parse_protocol import encode_document

PARSE_NICE = 10  # the worker's nice value: see engine/knowledge/embedder.py's INGEST_NICE

PAGE_EVERY_S = 0.05
PRELOADED = ("pypdfium2", "docx", "pptx", "openpyxl", "bs4", "lxml.etree", "charset_normalizer")  # imported before "ready"


def _arm(limits: ParseLimits) -> None:
    """This file's limits: the address space, and CPU time from now on."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    memory = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory if hard == resource.RLIM_INFINITY else min(memory, hard), hard))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + limits.cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _read(request: dict[str, Any], data: bytes, outbox: Connection) -> tuple[dict[str, Any], bool]:
    """The answer to one request, and whether this process should end after sending it."""
    limits = ParseLimits(**request["limits"])
    name = request["name"]

    sent = [0.0]
    pending: list[int] = []

    def on_page(done: int, total: int) -> None:
        # A message a page would wake the bot a hundred times a second on a fast PDF: the pages
        # read go together, at most every PAGE_EVERY_S (the first and the last at once).
        pending.append(done)
        now = time.monotonic()
        if now - sent[0] >= PAGE_EVERY_S or done == total:
            sent[0] = now
            outbox.send_bytes(json.dumps({"t": "pages", "done": pending, "total": total}).encode())
            pending.clear()

    _arm(limits)
    try:
        document = loaders.load(request["kind"], name, data, on_page=on_page, limits=limits)
    except ParleyError as exc:
        spent = _spent()
        return {"t": "error", "code": exc.code.value, "message": exc.user_message, **spent}, bool(spent)
    except (MemoryError, RecursionError) as exc:
        what = "memory" if isinstance(exc, MemoryError) else "nesting"
        return {"t": "error", "code": ErrorCode.FILE_TOO_COMPLEX.value, "limit": what}, True
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spent = _spent()
    return {"t": "done", "document": encode_document(document), "peak_mb": round(peak_mb), **spent}, bool(spent)


def _spent() -> dict[str, bool]:
    """{"last": True} once this process has loaded onnxruntime (OCR: a picture, a scanned page): it
    keeps about 950 MB of address space reserved, more than the next file's limit may leave, so
    the process ends after this file and the bot does not reuse it."""
    return {"last": True} if "onnxruntime" in sys.modules else {}


def serve(inbox: Connection, outbox: Connection) -> int:
    for module in (*PRELOADED, *filter(None, os.environ.get("PARLEY_PARSE_PLUGINS", "").split(","))):
        importlib.import_module(module.strip())
    outbox.send_bytes(b'{"t": "ready"}')
    while True:
        try:
            request = json.loads(inbox.recv_bytes())
            data = inbox.recv_bytes()
        except EOFError:  # the bot closed its end (it is shutting down, or gone)
            return 0
        try:
            answer, last = _read(request, data, outbox)
            del data
            outbox.send_bytes(json.dumps(answer, ensure_ascii=False).encode())
        except Exception as exc:  # noqa: BLE001 - a loader's unexpected failure: this file fails, not the bot
            code = ErrorCode.FILE_TOO_COMPLEX if isinstance(exc, MemoryError) else ErrorCode.FILE_UNREADABLE
            outbox.send_bytes(json.dumps({"t": "error", "code": code.value, "failure": type(exc).__name__}).encode())
            last = True
        if last:
            return 0


def main(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
    os.nice(PARSE_NICE)  # parsing yields the cores to answering (the embedder's ingest thread does the same)
    inbox = Connection(int(argv[1]), writable=False)
    outbox = Connection(int(argv[2]), readable=False)
    return serve(inbox, outbox)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

