"""A model served elsewhere, over the OpenAI chat completions API (vLLM, TGI, llama.cpp, Ollama).

RemoteBackend has the Backend interface: the engine plans the prompt as for a local model, hands
the chat messages to `submit`, and iterates the handle's events (GenText deltas, then one
GenFinished), streamed from POST {base_url}/chat/completions with stream=true. The server does
its own batching and queueing. Only the standard OpenAI fields are sent (model, messages,
max_tokens, temperature, top_p, seed): top_k and repetition_penalty have no place in that API.

A base_url may carry credentials (`https://user:token@host/v1`, `?api_key=…`): they are sent, and
never shown: describe() names the server as host[:port], and failure details (logged) carry the
URL without user, password or query, and with any of those values scrubbed from the error text.

A model entry with `vision: true` gets the pictures of the asker's turn as `image_url` parts of
that message (engine/vision.py builds them); a server's error that echoes one has its base64 cut
out before it reaches the log.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from typing import Any, AsyncIterator, Callable
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import aiohttp

from engine.config import ModelConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.generation import GenFinished, GenText, SamplingParams

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # between two chunks: a busy server may queue a request for a while
CHARS_PER_TOKEN = 4  # the usual rough figure when no tokenizer is configured
PART_TOKENS = 1024 * 1024 // (28 * 28)  # an image part's rough count (engine/vision.py's, at 1,024 a side)
# A picture's data in a server's error: as a data URL, or a long bare run of base64.
PICTURE_DATA = re.compile(r"data:image/[A-Za-z0-9.+-]*;base64,[A-Za-z0-9+/=\\]*|[A-Za-z0-9+/]{200,}={0,2}")


def content_tokens(content: Any, count_tokens: Callable[[str], int]) -> int:
    """The tokens of a message's content: its text, or its text parts and PART_TOKENS an image part."""
    if isinstance(content, list):
        texts = [str(part.get("text", "")) for part in content if part.get("type") == "text"]
        images = sum(1 for part in content if part.get("type") == "image_url")
        return count_tokens("\n".join(texts)) + images * PART_TOKENS
    return count_tokens(str(content))


def without_pictures(text: str) -> str:
    """`text` (a server's error, for the log) with any picture's data cut out."""
    return PICTURE_DATA.sub("[picture data]", text)


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream, one per event."""
    lines: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        # "event:", "id:", "retry:" and ":" comments carry nothing we use
    if lines:
        yield "\n".join(lines)


class RemoteHandle:
    """One streamed completion; the same async-iterator events as the local scheduler's handle."""

    def __init__(self, backend: "RemoteBackend", body: dict, prompt_tokens: int):
        self._backend = backend
        self._queue: asyncio.Queue = asyncio.Queue()
        self._prompt_tokens = prompt_tokens
        self._ended = False  # the last event (GenFinished or an error) is queued
        self._done = False  # ... and the consumer has it
        backend._started(self)
        self._task = asyncio.get_running_loop().create_task(self._run(body))
        self._task.add_done_callback(self._on_task_done)

    def _end(self, event) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(event)

    def _on_task_done(self, task: asyncio.Task) -> None:
        self._backend._finished(self)
        if task.cancelled():  # cancelled before it ever ran, so _run's handlers never saw it
            self._end(GenFinished(reason="cancelled", prompt_tokens=self._prompt_tokens, completion_tokens=0,
                                  first_token_s=0.0, total_s=0.0))
        elif task.exception() is not None:  # something _run did not expect (a malformed chunk...)
            self._end(ParleyError(ErrorCode.GENERATION_FAILED, "The model server did not answer properly.",
                                  detail=self._backend.scrub(f"{self._backend.url}: {task.exception()!r}")))

    def cancel(self) -> None:
        """Close the stream; the iterator ends with reason "cancelled"."""
        if not self._task.done():
            self._task.cancel()

    def __aiter__(self):
        return self._events()

    async def _events(self):
        while not self._done:
            event = await self._queue.get()
            if isinstance(event, BaseException):
                self._done = True
                raise event
            if isinstance(event, GenFinished):
                self._done = True
            yield event

    async def _run(self, body: dict) -> None:
        backend = self._backend
        started = time.perf_counter()
        first_token_s: float | None = None
        completion_tokens = 0
        usage: dict = {}
        reason = "stop"
        try:
            async with backend.session().post(backend.endpoint, json=body, headers=backend.headers()) as resp:
                if resp.status != 200:
                    raise backend.http_error(resp.status, await resp.text())
                async for data in sse_data(resp.content):
                    if data.strip() == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise backend.http_error(200, json.dumps(chunk["error"]))
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if first_token_s is None:
                                first_token_s = time.perf_counter() - started
                            completion_tokens += 1  # servers send about one token per chunk
                            backend._tokens_generated += 1
                            self._queue.put_nowait(GenText(text))
                        if choice.get("finish_reason"):
                            reason = "length" if choice["finish_reason"] == "length" else "stop"
        except asyncio.CancelledError:
            reason = "cancelled"  # our own cancel(): leaving the `async with` closed the connection
        except ParleyError as exc:
            self._end(exc)
            return
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            # The engine logs the failure once, with this detail and the reference the user sees.
            self._end(ParleyError(ErrorCode.GENERATION_FAILED, "The model server did not answer properly.",
                                  detail=backend.scrub(f"{backend.url}: {exc!r}")))
            return
        self._end(GenFinished(
            reason=reason,
            prompt_tokens=int(usage.get("prompt_tokens") or self._prompt_tokens),
            completion_tokens=int(usage.get("completion_tokens") or completion_tokens),
            first_token_s=first_token_s if first_token_s is not None else 0.0,
            total_s=time.perf_counter() - started))


def redacted_url(url: str) -> str:
    """`url` as it may be shown or logged: without user, password, query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def server_name(url: str) -> str:
    """The server of `url` as /llm-model, /llm-stats and the metrics name it: host[:port]."""
    return urlsplit(url).netloc.rpartition("@")[2] or redacted_url(url)


def url_secrets(url: str) -> list[str]:
    """The values in `url` that must never be shown: user, password, every query value."""
    parts = urlsplit(url)
    values = [parts.username, parts.password, *(v for _, v in parse_qsl(parts.query))]
    found = {form for v in values if v and len(v) >= 3 for form in (v, unquote(v), quote(v, safe=""))}
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another


class RemoteBackend:
    """An openai_compatible model entry: base_url, api_model, optional api_key_env and tokenizer."""

    def __init__(self, config: ModelConfig):
        self.config = config
        base = urlsplit(config.base_url)
        # Where requests go (credentials included), and the same as it may be shown or logged.
        self.endpoint = urlunsplit(base._replace(path=base.path.rstrip("/") + "/chat/completions", fragment=""))
        self.url = redacted_url(self.endpoint)
        self._api_key = ""
        if config.api_key_env:
            self._api_key = os.environ.get(config.api_key_env, "")
            if not self._api_key:
                raise ParleyError(ErrorCode.MODEL_LOAD_FAILED,
                                  f"model {config.name!r}: the environment variable {config.api_key_env} is not set")
        self._secrets = [s for s in [*url_secrets(config.base_url), self._api_key] if s]
        if self._api_key and (base.username or base.password):  # aiohttp cannot send both
            raise ParleyError(ErrorCode.MODEL_LOAD_FAILED, f"model {config.name!r}: its base_url has a user and "
                              f"password and {config.api_key_env} is set too; keep one of them")
        self._tokenizer = self._load_tokenizer(config.tokenizer) if config.tokenizer else None
        self._session: aiohttp.ClientSession | None = None
        self._active: set[RemoteHandle] = set()
        self._closing = False
        self._max_batch: int | None = None  # the server batches; kept only so set_max_batch is harmless
        self._tokens_generated = 0
        self._requests_finished = 0
        self._busy_since: float | None = None
        self._busy_seconds = 0.0

    @staticmethod
    def _load_tokenizer(path: str):
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        if path.endswith(".json"):
            return PreTrainedTokenizerFast(tokenizer_file=path)
        return AutoTokenizer.from_pretrained(path)  # a local directory; HF_HUB_OFFLINE keeps it local

    # ---- Backend interface -------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        return max(1, -(-len(text) // CHARS_PER_TOKEN)) if text else 0

    def encode_chat(self, messages: list[dict]) -> list[dict]:
        return [dict(m) for m in messages]  # the server applies its own chat template

    def submit(self, prompt: list[dict], params: SamplingParams) -> RemoteHandle:
        if self._closing:
            raise ParleyError(ErrorCode.SHUTTING_DOWN)
        body = {
            "model": self.config.api_model,
            "messages": prompt,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        prompt_tokens = sum(content_tokens(m.get("content", ""), self.count_tokens) + 4 for m in prompt)
        return RemoteHandle(self, body, prompt_tokens)

    async def shutdown(self, *, cancel: bool) -> None:
        self._closing = True
        handles = list(self._active)
        if cancel:
            for handle in handles:
                handle.cancel()
        await asyncio.gather(*(h._task for h in handles), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def scrub(self, text: str) -> str:
        """`text` (an error's detail, for the log) without the URL's credentials, the API key or a
        picture's data."""
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return without_pictures(text)

    def describe(self) -> dict:
        return {"device": server_name(self.config.base_url),
                "dtype": "openai_compatible", "load_seconds": None, "parameters": None}

    def scheduler_snapshot(self) -> dict:
        busy = self._busy_seconds + (time.perf_counter() - self._busy_since if self._busy_since else 0.0)
        return {"running": len(self._active), "queued": 0, "max_batch": self._max_batch or "server",
                "tokens_generated": self._tokens_generated, "requests_finished": self._requests_finished,
                "busy_seconds": busy}

    def set_max_batch(self, n: int) -> None:
        self._max_batch = n  # memory here does not grow with the remote server's batch

    # ---- helpers for the handles -------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S))
        return self._session

    def headers(self) -> dict:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def http_error(self, status: int, body: str) -> ParleyError:
        lowered = body.lower()
        detail = self.scrub(f"{self.url}: HTTP {status}: {body[:500]}")
        if status == 400 and ("context" in lowered or "too long" in lowered or "maximum" in lowered):
            return ParleyError(ErrorCode.CONTEXT_TOO_LONG, detail=detail)
        if status in (429, 503):
            return ParleyError(ErrorCode.OVERLOADED, "The model server is busy. Please try again shortly.",
                               detail=detail)
        return ParleyError(ErrorCode.GENERATION_FAILED, "The model server refused the request.", detail=detail)

    def _started(self, handle: RemoteHandle) -> None:
        if not self._active:
            self._busy_since = time.perf_counter()
        self._active.add(handle)

    def _finished(self, handle: RemoteHandle) -> None:
        if handle not in self._active:
            return
        self._active.discard(handle)
        self._requests_finished += 1
        if not self._active and self._busy_since is not None:
            self._busy_seconds += time.perf_counter() - self._busy_since
            self._busy_since = None
