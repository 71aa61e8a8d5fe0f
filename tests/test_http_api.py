"""The OpenAI-compatible HTTP API (adapters/http_api) through a real aiohttp server, the real
engine and the real small model, driven by the official `openai` client and by raw HTTP.

Nothing here depends on the model's words: only on the shape of what comes back, the usage
figures, the scheduler's counts, the statuses and the documents' names.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path

import aiohttp
import numpy as np
import openai
import pytest

from adapters.http_api.routes import OPEN_ROUTES, ROUTES
from adapters.http_api.server import ApiServer
from engine.api_keys import KeyStore
from engine.keys_cli import keys_cli
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
HI = [{"role": "user", "content": "Say hello."}]
DOC = ("Parlandia field notes.\n\nThe zebra migration of Parlandia crosses the Ombrel river every "
       "October, when the herds leave the northern salt flats for the southern grasslands.\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(engine):
    engine.config.http_api.port = free_port()
    server = ApiServer(engine, engine.config)
    await server.start()
    try:
        yield f"http://127.0.0.1:{engine.config.http_api.port}"
    finally:
        await server.stop()


def client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


async def sse(response: aiohttp.ClientResponse) -> list:
    """The data lines of a server-sent event stream, parsed ("[DONE]" kept as is)."""
    events = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            data = text.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def wait_until(check, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def api_config(tmp_path):
    return make_config(tmp_path / "data", knowledge={"enabled": False}, limits={"user_per_minute": 1000},
                       http_api={"max_body_mb": 1})


# ---- completions -------------------------------------------------------------------------------

async def test_the_openai_client_and_raw_http_get_completions_streamed_and_whole(engine_factory, api_config):
    engine = await engine_factory(api_config)
    key = KeyStore(api_config.data_path).create("tool", "W1")
    async with serving(engine) as url:
        api = client(url, key)
        models = await api.models.list()
        assert [m.id for m in models.data] == ["smollm2-135m", "smollm2-135m-b"]  # the live one first

        whole = await api.chat.completions.create(model="smollm2-135m", messages=HI, max_tokens=8, temperature=0,
                                                  seed=1, top_p=1.0)
        assert whole.choices[0].finish_reason in ("stop", "length")
        assert isinstance(whole.choices[0].message.content, str)
        assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 8
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

        stream = await api.chat.completions.create(model="smollm2-135m", messages=HI, max_tokens=8, stream=True,
                                                   stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content  # greedy: the same answer either way
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")

        # Raw HTTP, as curl would: SSE lines, usage on the last chunk, [DONE] at the end.
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/v1/chat/completions", headers=headers,
                                 json={"messages": HI, "max_tokens": 8, "stream": True}) as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
                events = await sse(response)
            assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] > 0
            async with http.post(f"{url}/v1/chat/completions", headers=headers,
                                 json={"messages": HI, "max_tokens": 4}) as response:
                body = await response.json()
            assert response.status == 200 and body["object"] == "chat.completion" and body["usage"]["total_tokens"] > 0

            # A stop string ends the answer before it: the first character the model wrote, cut at.
            first = whole.choices[0].message.content.lstrip()[:1] or "x"
            async with http.post(f"{url}/v1/chat/completions", headers=headers,
                                 json={"messages": HI, "max_tokens": 8, "stop": [first]}) as response:
                stopped = await response.json()
            assert first not in stopped["choices"][0]["message"]["content"]
            assert stopped["choices"][0]["finish_reason"] == "stop"

        values = (await engine.stats()).values
        assert values["requests"] >= 4 and values["answered"] >= 4  # counted like chat answers (/llm-stats, metrics)


async def test_refusals_are_shaped_like_openai_errors(engine_factory, api_config):
    engine = await engine_factory(api_config)
    key = KeyStore(api_config.data_path).create("tool", "W1")
    async with serving(engine) as url:
        with pytest.raises(openai.AuthenticationError) as bad:
            await client(url, "pk-not-a-key").chat.completions.create(model="", messages=HI)
        assert bad.value.status_code == 401 and bad.value.body["parley_code"] == "UNAUTHORIZED"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/v1/models") as response:  # no key at all
                assert response.status == 401
                assert set((await response.json())["error"]) >= {"message", "type", "code", "param", "reference"}
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"

        api = client(url, key)
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model="gpt-4o", messages=HI)
        with pytest.raises(openai.BadRequestError) as long:
            await api.chat.completions.create(model="smollm2-135m", messages=[
                {"role": "user", "content": "word " * 3000}])
        assert long.value.code == "context_length_exceeded" and "context window is 2048" in long.value.message
        assert long.value.body["parley_code"] == "CONTEXT_TOO_LONG" and re.fullmatch(r"[0-9a-f]{8}",
                                                                                      long.value.body["reference"])
        with pytest.raises(openai.BadRequestError):
            await api.chat.completions.create(model="smollm2-135m", messages=HI, temperature=7)
        # Another model than the live one is loaded for operators only.
        with pytest.raises(openai.PermissionDeniedError):
            await api.chat.completions.create(model="smollm2-135m-b", messages=HI)
        async with aiohttp.ClientSession() as http:
            big = {"messages": [{"role": "user", "content": "x" * (2 * 2**20)}]}  # past http_api.max_body_mb
            async with http.post(f"{url}/v1/chat/completions", json=big,
                                 headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 413 and "error" in await response.json()
    assert key not in (api_config.data_path / "api_keys.json").read_text()  # only its hash is kept


async def test_an_engine_still_loading_answers_503_with_retry_after(api_config):
    from engine.core import Engine

    engine = Engine(api_config)  # not started: the model is not loaded yet
    key = KeyStore(api_config.data_path).create("early", "W1")
    async with serving(engine) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"messages": HI}) as response:
            assert response.status == 503 and int(response.headers["Retry-After"]) > 0
            assert (await response.json())["error"]["parley_code"] == "MODEL_NOT_READY"
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 503


async def test_rate_limits_and_the_keys_cap_on_requests_in_flight_answer_429(engine_factory, tmp_path):
    config = make_config(tmp_path / "data", knowledge={"enabled": False}, limits={"user_per_minute": 2},
                         http_api={"max_in_flight": 1})
    engine = await engine_factory(config)
    store = KeyStore(config.data_path)
    limited = store.create("limited", "W1")
    busy = store.create("busy", "W2")
    async with serving(engine) as url, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {limited}"},
                                 json={"messages": HI, "max_tokens": 2}) as response:
                statuses.append(response.status)
                refusal = (await response.json(), response.headers.get("Retry-After"))
        assert statuses == [200, 200, 429]
        assert refusal[0]["error"]["type"] == "rate_limit_error" and int(refusal[1]) > 0
        assert (await engine.stats()).values["rate_limited"] == 1  # counted as chat users' refusals are

        long = {"messages": HI, "max_tokens": 1500, "min_tokens": 1500, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {busy}"},
                             json=long) as streaming:
            await streaming.content.readline()
            async with http.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {busy}"},
                                 json={"messages": HI, "max_tokens": 2}) as second:
                assert second.status == 429 and second.headers["Retry-After"] == "1"
                assert (await second.json())["error"]["code"] == "too_many_requests_in_flight"


async def test_a_client_that_disconnects_mid_stream_cancels_its_generation(engine_factory, api_config):
    engine = await engine_factory(api_config)
    key = KeyStore(api_config.data_path).create("tool", "W1")
    running = lambda: engine.snapshot().scheduler.get("running", 0)  # noqa: E731
    async with serving(engine) as url, aiohttp.ClientSession() as http:
        response = await http.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                   json={"messages": HI, "max_tokens": 1500, "min_tokens": 1500, "stream": True})
        assert response.status == 200
        assert (await response.content.readline()).startswith(b"data: ")
        assert running() == 1
        response.close()  # the client goes away mid-answer
        await wait_until(lambda: running() == 0)
    figures = engine.snapshot().scheduler
    assert figures["requests_cancelled"] == 1 and figures["tokens_generated"] < 1500


# ---- documents, scopes, sessions, embeddings ---------------------------------------------------

@pytest.mark.slow
async def test_documents_stay_in_their_scope_and_workspace_and_answers_cite_them(engine_factory, tmp_path,
                                                                                 embedder):
    config = make_config(tmp_path / "data", limits={"user_per_minute": 1000})
    engine = await engine_factory(config)
    store = KeyStore(config.data_path)
    owner = store.create("owner", "W1", scopes=("channel:docs",))
    stranger = store.create("stranger", "W2", scopes=("channel:docs",))
    neighbour = store.create("neighbour", "W1", scopes=("channel:other",))
    async with serving(engine) as url, aiohttp.ClientSession() as http:
        def auth(key: str) -> dict:
            return {"Authorization": f"Bearer {key}"}

        form = aiohttp.FormData()
        form.add_field("file", DOC.encode(), filename="parlandia.txt", content_type="text/plain")
        form.add_field("purpose", "assistants")
        async with http.post(f"{url}/v1/files", headers=auth(owner), data=form) as response:
            uploaded = await response.json()
        assert response.status == 200 and uploaded["filename"] == "parlandia.txt" and uploaded["parley"]["chunks"] > 0

        async def listed(key: str, query: str = "") -> tuple[int, list]:
            async with http.get(f"{url}/v1/files{query}", headers=auth(key)) as r:
                return r.status, [f["filename"] for f in (await r.json()).get("data", [])]

        assert await listed(owner) == (200, ["parlandia.txt"])
        assert await listed(stranger) == (200, [])  # the same scope name in another workspace: another scope
        assert (await listed(neighbour, "?scope=channel:docs"))[0] == 403
        async with http.delete(f"{url}/v1/files/{uploaded['id']}", headers=auth(stranger)) as response:
            assert response.status == 404

        question = [{"role": "user", "content": "When does the zebra migration of Parlandia cross the Ombrel river?"}]
        api = client(url, owner)
        answer = await api.chat.completions.create(model="", messages=question, max_tokens=8,
                                                   extra_body={"parley": {"scope": "channel:docs"}})
        assert [s["file"] for s in answer.model_extra["parley"]["sources"]] == ["parlandia.txt"]
        stream = await api.chat.completions.create(model="", messages=question, max_tokens=8, stream=True,
                                                   extra_body={"parley": {"scope": "channel:docs"}})
        chunks = [c async for c in stream]
        assert chunks[-1].model_extra["parley"]["sources"][0]["excerpt"]
        with pytest.raises(openai.PermissionDeniedError):
            await client(url, neighbour).chat.completions.create(model="", messages=question,
                                                                 extra_body={"parley": {"scope": "channel:docs"}})
        plain = await client(url, stranger).chat.completions.create(model="", messages=question, max_tokens=4)
        assert plain.model_extra["parley"]["sources"] == []

        # A session continues a stored conversation: both turns of each exchange are kept.
        for _ in range(2):
            await api.chat.completions.create(model="", messages=HI, max_tokens=4,
                                              extra_body={"parley": {"session": "s1"}})
        session = await asyncio.to_thread(engine.sessions.get, "api/W1/~owner/owner:s1")
        assert len(session.turns) == 4

        texts = ["the zebra migration", "a quarterly budget"]
        vectors = await api.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64, as the client asks
        assert np.allclose([d.embedding for d in vectors.data], embedder.encode(texts), atol=1e-6)
        async with http.post(f"{url}/v1/embeddings", headers=auth(owner), json={"input": texts}) as response:
            assert np.allclose([d["embedding"] for d in (await response.json())["data"]], embedder.encode(texts),
                               atol=1e-6)

        async with http.delete(f"{url}/v1/files/{uploaded['id']}", headers=auth(owner)) as response:
            assert response.status == 200 and (await response.json())["deleted"] is True
        assert await listed(owner) == (200, [])


# ---- keys and the docs -------------------------------------------------------------------------

def test_keys_are_printed_once_stored_hashed_and_revoked(tmp_path, capsys):
    config = make_config(tmp_path / "data")
    assert keys_cli(config, ["create", "ci", "--workspace", "W1", "--role", "admin", "--scope", "workspace"]) == 0
    key = capsys.readouterr().out.strip()
    store = KeyStore(config.data_path)
    assert store.verify(key).role == "admin" and key not in store.path.read_text()
    assert keys_cli(config, ["list"]) == 0
    listed = capsys.readouterr().out
    assert "ci\tW1\tadmin\tworkspace" in listed and key not in listed
    assert keys_cli(config, ["create", "ci"]) == 2  # names are unique
    assert keys_cli(config, ["revoke", "ci"]) == 0 and store.verify(key) is None


def test_every_route_has_its_row_in_the_security_doc():
    from tests.test_authority import entry_rows

    documented = set(entry_rows()["http"])
    assert documented == {("route", f"{method} {path}") for method, path, _ in (*ROUTES, *OPEN_ROUTES)}
    assert ("command", "bot.py keys") in entry_rows()["cli"]
