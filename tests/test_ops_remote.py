"""The openai_compatible model source through Engine.answer, against a local server speaking the
OpenAI streaming chat protocol (tests/ops_servers.py FakeOpenAI): streamed deltas, failures with
their code and reference, cancellation that closes the stream, shutdown."""
from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import collect, make_config
from engine.core import Engine
from engine.errors import ErrorCode
from engine.types import AnswerDone, AnswerFailed, ChatRequest, Conversation, TextDelta, User
from ops_servers import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

ADA = User("U1", "ada")
THREAD = Conversation("slack", "T1", "C1", "1.0")


def remote_config(tmp_path, server: FakeOpenAI, **model):
    entry = {"name": "big", "source": "openai_compatible", "base_url": server.base_url, "api_model": "llama-3-8b",
             "context_window": 4096, "generation": {"temperature": 0.0, "max_new_tokens": 64}, **model}
    return make_config(tmp_path / "data", models=[entry], default_model="big", knowledge={"enabled": False})


@pytest.fixture
async def server():
    fake = await FakeOpenAI().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def engine_for(tmp_path):
    engines = []

    async def build(config):
        engine = Engine(config, model_loader=lambda cfg: pytest.fail("a remote model is never loaded"))
        await engine.start()
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        if engine.state == "ready":
            await engine.stop()


def ask(text: str, thread: str = "1.0") -> ChatRequest:
    return ChatRequest(where=Conversation("slack", "T1", "C1", thread), user=ADA, text=text)


async def test_answer_streams_from_the_server(server, engine_for, tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_TEST_API_KEY", "sk-test-123456")
    server.api_key = "sk-test-123456"
    engine = await engine_for(remote_config(tmp_path, server, api_key_env="PARLEY_TEST_API_KEY"))
    text, final, events = await collect(engine, ask("What is the capital of France?"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 6 and text == "Paris is the capital of France."  # streamed, piece by piece
    assert isinstance(final, AnswerDone) and final.finish_reason == "stop" and final.completion_tokens == 6

    body = server.requests[0]
    assert body["model"] == "llama-3-8b" and body["stream"] is True and body["max_tokens"] == 64
    assert body["messages"][0]["role"] == "system" and body["messages"][-1] == {
        "role": "user", "content": "What is the capital of France?"}
    assert server.headers[0]["Authorization"] == "Bearer sk-test-123456"

    # The thread continues: the next request carries the history.
    await collect(engine, ask("And of Italy?"))
    assert [m["content"] for m in server.requests[1]["messages"][1:]] == [
        "What is the capital of France?", "Paris is the capital of France.", "And of Italy?"]

    info = next(m for m in engine.list_models() if m.live)
    assert info.name == "big" and info.source == "openai_compatible"
    report = await engine.stats()
    assert "*Model* big on 127.0.0.1" in report.render() and report.values["completion_tokens"] == 12


async def test_length_limit_is_reported(server, engine_for, tmp_path):
    server.reply = " ".join(f"w{i}" for i in range(100))
    engine = await engine_for(remote_config(tmp_path, server, generation={"max_new_tokens": 10}))
    text, final, _ = await collect(engine, ask("Count."))
    assert final.finish_reason == "length" and final.completion_tokens == 10 and text.split()[-1] == "w9"


@pytest.mark.parametrize("mode", ["error", "drop"])
async def test_server_failure_gives_code_and_reference(server, engine_for, tmp_path, caplog, mode):
    server.mode = mode
    engine = await engine_for(remote_config(tmp_path, server))
    caplog.set_level(logging.INFO)
    _, final, _ = await collect(engine, ask("Hello?"))
    assert isinstance(final, AnswerFailed) and final.code is ErrorCode.GENERATION_FAILED
    assert final.reference and f"ref {final.reference}" in final.render()
    # One log line carries the reference the user saw, with what went wrong for the admin.
    lines = [r for r in caplog.records if getattr(r, "ref", None) == final.reference]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert ("HTTP 500" in lines[0].detail and "CUDA out of memory" in lines[0].detail) if mode == "error" \
        else server.base_url in lines[0].detail
    report = await engine.stats()
    assert report.values["errors"] == {"GENERATION_FAILED": 1}
    assert engine.sessions.get(THREAD.session_key) is None  # a failed answer leaves no half turn


async def test_missing_api_key_is_a_clear_load_failure(server, tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_TEST_API_KEY", raising=False)
    engine = Engine(remote_config(tmp_path, server, api_key_env="PARLEY_TEST_API_KEY"))
    with pytest.raises(Exception) as info:
        await engine.start()
    assert getattr(info.value, "code", None) is ErrorCode.MODEL_LOAD_FAILED and "PARLEY_TEST_API_KEY" in str(info.value)
    await engine.stop()


async def test_closing_the_answer_closes_the_stream(server, engine_for, tmp_path):
    server.reply = " ".join(f"w{i}" for i in range(60))
    server.delay = 0.05
    engine = await engine_for(remote_config(tmp_path, server))
    events = engine.answer(ask("Go on."))
    seen = []
    async for event in events:
        if isinstance(event, TextDelta):
            seen.append(event.text)
            if len(seen) == 3:
                break
    await events.aclose()
    for _ in range(50):
        if server.disconnected:
            break
        await asyncio.sleep(0.05)
    assert server.disconnected == 1  # the server saw the connection go: it can stop generating
    assert engine.lineup.live.scheduler_snapshot()["running"] == 0


async def test_stop_cancels_and_saves_the_partial_answer(server, engine_for, tmp_path):
    server.reply = " ".join(f"w{i}" for i in range(200))
    server.delay = 0.05
    config = remote_config(tmp_path, server)
    engine = await engine_for(config)
    got: list = []

    async def consume():
        async for event in engine.answer(ask("Write a lot.")):
            got.append(event)

    task = asyncio.create_task(consume())
    while sum(isinstance(e, TextDelta) for e in got) < 3:
        await asyncio.sleep(0.02)
    await engine.stop(cancel=True)
    await asyncio.wait_for(task, 5)
    final = got[-1]
    assert isinstance(final, AnswerDone) and final.finish_reason == "cancelled"
    again = Engine(config)
    await again.start()
    turns = again.sessions.get(THREAD.session_key).turns
    assert [t.role for t in turns] == ["user", "assistant"] and turns[1].text.startswith("w0 w1 w2")
    await again.stop()


TORCH_FREE = r'''
import asyncio, sys
sys.path.insert(0, "tests")
from conftest import collect, make_config
from ops_servers import FakeOpenAI
from engine.core import Engine
from engine.types import AnswerDone, ChatRequest, Conversation, User

async def main(data):
    server = await FakeOpenAI().start()
    entry = {"name": "big", "source": "openai_compatible", "base_url": server.base_url, "api_model": "m",
             "context_window": 4096}
    config = make_config(data, models=[entry], default_model="big", knowledge={"enabled": False})
    engine = Engine(config)
    await engine.start()
    ask = ChatRequest(where=Conversation("slack", "T1", "C1", "1.0"), user=User("U1", "ada"), text="Hi?")
    text, final, _ = await collect(engine, ask)
    assert isinstance(final, AnswerDone) and text, final
    await engine.stop()
    await server.stop()
    print("loaded:", sorted(m for m in ("torch", "transformers", "llama_cpp", "sentence_transformers")
                            if m in sys.modules))

asyncio.run(main(sys.argv[1]))
'''


def test_a_remote_only_deployment_never_imports_torch(tmp_path):
    """A team that serves its model with vLLM runs Parley without torch, transformers or llama.cpp
    ever being imported (start-up in a fraction of the time, and none of their memory)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", TORCH_FREE, str(tmp_path / "data")], cwd=root,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded: []" in done.stdout, done.stdout
