"""The JSON an OpenAI client reads: a chat completion, its streamed chunks, usage, and Parley's
extension field (`parley`: the sources an answer used, the session it continued)."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from engine.types import AnswerDone, Source

FINISH_REASONS = {"stop": "stop", "length": "length", "not_found": "stop", "cancelled": "stop"}


def usage(done: AnswerDone) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def source(s: Source) -> dict:
    return {"file": s.file, "page": s.page, "excerpt": s.excerpt, "version": s.version}


@dataclass
class Completion:
    """One completion's identity, as every chunk and the final object carry it."""

    model: str
    session: str = ""
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def extension(self, done: AnswerDone) -> dict:
        out: dict = {"sources": [source(s) for s in done.sources]}
        if self.session:
            out["session"] = self.session
        return out

    def whole(self, done: AnswerDone) -> dict:
        """The non-streamed reply."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": done.model or self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                             "logprobs": None, "finish_reason": FINISH_REASONS.get(done.finish_reason, "stop")}],
                "usage": usage(done), "parley": self.extension(done)}

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> dict:
        """One streamed event: a piece of the answer (`delta`), or its end (`finish_reason`)."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}

    def last_chunk(self, done: AnswerDone) -> dict:
        """The chunk with the finish reason; it carries the usage too."""
        return self.chunk({}, FINISH_REASONS.get(done.finish_reason, "stop"), usage=usage(done))

    def usage_chunk(self, done: AnswerDone) -> dict:
        """`stream_options.include_usage`: a chunk without choices, with the usage."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage(done)}

    def sources_chunk(self, done: AnswerDone) -> dict:
        """The final event of a streamed answer that used documents: their sources."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "parley": self.extension(done)}
