"""Loader kinds that misbehave as a hostile file makes a parser misbehave, for
tests/test_hostile_files.py. The parse worker imports this module when PARLEY_PARSE_PLUGINS names
it (engine/knowledge/parse_worker.py); the test's sniff hands these kinds to the files named in
KIND_OF. They run in the worker only: in the bot's process they would do what they say.
"""
from __future__ import annotations

import ctypes
import os
import time

from engine.knowledge import loaders


def _hang(filename, data, on_page, limits):
    """PDFium stuck in a page: one page read, then nothing more."""
    on_page(1, 3)
    time.sleep(3600)


def _stall(filename, data, on_page, limits):
    """A parser that never reports anything."""
    time.sleep(3600)


def _segfault(filename, data, on_page, limits):
    """Native code reading address 0, as a crashing PDFium would."""
    on_page(1, 2)
    ctypes.string_at(0)


def _abort(filename, data, on_page, limits):
    os.abort()


def _hog(filename, data, on_page, limits):
    """A decompression that never ends: memory until there is none."""
    held = []
    while True:
        held.append(bytearray(32 << 20))


def _flood(filename, data, on_page, limits):
    """A reader that answers far more text than any file yields (as a subverted worker could)."""
    from engine.knowledge.records import PageText

    return [PageText(page=None, text="flood " * 5_000_000)]


def _spin(filename, data, on_page, limits):
    """A parser in an endless loop."""
    while True:
        pass


KINDS = {"test-hang": _hang, "test-stall": _stall, "test-segfault": _segfault, "test-abort": _abort,
         "test-hog": _hog, "test-spin": _spin, "test-flood": _flood}
KIND_OF = {"hang.pdf": "test-hang", "stall.pdf": "test-stall", "segfault.pdf": "test-segfault",
           "abort.pdf": "test-abort", "hog.pdf": "test-hog", "spin.pdf": "test-spin", "flood.pdf": "test-flood"}
loaders.LOADERS.update(KINDS)
