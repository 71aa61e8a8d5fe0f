"""Incremental detokenization: token ids in, text deltas out, exactly as a full decode would read.

Decoding one token at a time breaks text two ways: a multi-byte character split over tokens
decodes to U+FFFD until its last byte arrives, and SentencePiece-style tokenizers drop a word's
leading space when the token is decoded alone. The vLLM/TGI approach fixes both: decode a small
window of recent tokens (prefix_offset..end), emit only what it adds beyond the already-read part
(prefix_offset..read_offset), and hold back while the window ends in U+FFFD.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._emitted: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add one token; returns the text it completes ("" while a character is incomplete)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self._prefix_offset:self._read_offset])
        window = self._decode(self.ids[self._prefix_offset:])
        if len(window) > len(prefix) and not window.endswith(REPLACEMENT):
            delta = window[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self._emitted.append(delta)
            return delta
        return ""

    def finish(self) -> str:
        """The text still held back, so that all deltas join to decode(ids) exactly."""
        full = self._decode(self.ids)
        emitted = "".join(self._emitted)
        if not full.startswith(emitted):  # should not happen; text already sent cannot be retracted
            log.warning("incremental decode diverged from the full decode",
                        extra={"tokens": len(self.ids), "emitted_chars": len(emitted), "full_chars": len(full)})
            return ""
        rest = full[len(emitted):]
        if rest:
            self._emitted.append(rest)
        return rest
