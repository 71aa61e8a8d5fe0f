"""Sessions that stay small (issue 22): a thread of 5,000 turns stores its newest `max_turns` and
folds the rest into its summary line (the prompt is the one the whole thread would give), an
answer in it writes and reads no more than in a short thread, /metrics over 5,000 sessions and
20,000 votes answers in under 100 ms without reading a session or a vote, and stores written by
the layout before (pickled Session objects in SQLite or Redis) are read and converted. On SQLite
and on a real redis-server (tests/ops_servers.py)."""
from __future__ import annotations

import asyncio
import json
import pickle
import random
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import collect, make_config, spy_prompts
from engine.feedback import DAY_S, AnswerRecord, FeedbackStore
from engine.prompting import plan_prompt, summarise_dropped
from engine.redis_sessions import RedisMapping, RedisSessions
from engine.sessions import Session, SessionStore, SqliteSessions, Turn
from engine.types import AnswerDone, ChatRequest, Conversation, User
from engine.vote_tally import RedisTally
from ops_servers import free_port, redis_server

pytestmark = pytest.mark.timeout(300)

LONG = 5000
MAX_TURNS = 200
T0 = 1_700_000_000.0
ANA, BEN = User("U1", "Ana"), User("U2", "Ben")
SETTINGS = {"prompt": "You are Parley. Answer in one sentence.", "model": "smollm2-135m", "scope": "channel",
            "length": "short", "reply": "mentions"}


def conversation(n: int, t0: float = T0, tag: str = "") -> list[Turn]:
    """n turns: two people asking (15-word questions), the assistant answering."""
    turns = []
    for i in range(n // 2):
        who = ANA if i % 3 else BEN
        turns.append(Turn("user", f"Question {tag}{i}: what about line {i} of the spring budget plan for the whole team?",
                          who.id, t0 + i, user_name=who.name, message_id=f"{t0 + i:.6f}"))
        turns.append(Turn("assistant", f"Answer {tag}{i}: " + "the line is fine " * 6, "", t0 + i))
    return turns


def old_layout(key: str, turns: list[Turn], updated_at: float, settings: dict | None = None) -> Session:
    """A Session as the layout before this one pickled it: its fields, and no fold."""
    legacy = object.__new__(Session)
    legacy.__dict__.update(key=key, turns=tuple(turns), created_at=turns[0].at if turns else updated_at,
                           updated_at=updated_at, settings=dict(settings or {}))
    return legacy


@dataclass
class Backend:
    """Where a test's sessions live, and how to look at the storage behind the store."""

    kind: str
    open: Callable[..., SessionStore]
    stored: Callable[[str], int]  # the turns the storage holds for a key
    url: str = ""


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "sessions.sqlite"

        def stored(key: str) -> int:
            with sqlite3.connect(path) as db:
                return db.execute("SELECT COUNT(*) FROM session_turns WHERE key = ?", (key,)).fetchone()[0]

        yield Backend("sqlite", lambda max_turns=MAX_TURNS, durable=False: SessionStore(
            SqliteSessions(path, max_turns, durable=durable)), stored)
        return
    import redis

    with redis_server(tmp_path / "redis") as url:
        client = redis.Redis.from_url(url)
        yield Backend("redis", lambda max_turns=MAX_TURNS, durable=False: SessionStore(
            RedisSessions.from_url(url, "g:", ttl_seconds=3600, max_turns=max_turns)),
            lambda key: client.llen(f"g:#turns:{key}"), url)
        client.close()


def words(text: str) -> int:
    return len(text.split())


def plan(history, earlier=None, budget: int = 300):
    extra = {"earlier": earlier} if earlier is not None else {}
    return plan_prompt(system_prompt="You are Parley.", history=history, message="And the summer plan?",
                       count_tokens=words, history_budget=budget, context_window=2048, max_new_tokens=256,
                       speaker=ANA.name, speaker_id=ANA.id, **extra)


# ---- a long thread stays small --------------------------------------------------------------

def test_a_thread_of_5000_turns_stores_its_newest_and_folds_the_rest(backend):
    store = backend.open()
    key = "slack/T1/C1/1700000000.000001"
    turns = conversation(LONG)
    for i in range(0, LONG, 250):
        assert store.append(key, *turns[i:i + 250], settings={"model": "m"}) <= MAX_TURNS
    session = store.get(key)
    assert backend.stored(key) == MAX_TURNS, "the storage holds max_turns turns, not the thread's life"
    assert session.turns == tuple(turns[-MAX_TURNS:]) and session.settings == {"model": "m"}
    assert (session.folded.turns, session.folded.questions) == (LONG - MAX_TURNS, (LONG - MAX_TURNS) // 2)

    # The summary line holds the folded turns as if they were still there...
    line = summarise_dropped((), True, session.folded)
    assert line == summarise_dropped(turns[:LONG - MAX_TURNS], True)
    assert line.startswith(f"Earlier in this thread ({LONG - MAX_TURNS} older messages not shown), people said:")
    assert 'Ana: "Question 2399: what about line 2399 of the spring budget plan for…"; and 2394 more.' in line
    # ...and the prompt is the one the whole thread gives (tight and roomy budgets alike).
    for budget in (300, 1500):
        full, compacted = plan(turns, budget=budget), plan(session.turns, session.folded, budget=budget)
        assert compacted.messages == full.messages and compacted.history_dropped == full.history_dropped

    # The next answer's two turns: the oldest two are folded, storage stays bounded.
    store.append(key, Turn("user", "One more?", ANA.id, T0 + LONG, user_name=ANA.name), Turn("assistant", "Sure.", "", T0 + LONG))
    again = store.get(key)
    assert backend.stored(key) == MAX_TURNS and again.folded.turns == LONG - MAX_TURNS + 2
    assert again.turns[-1].text == "Sure." and again.turns[0] == turns[-MAX_TURNS + 2]
    store.close()
    reopened = backend.open()  # a restart reads the same
    assert reopened.get(key) == again
    reopened.close()


def test_an_answer_in_a_long_thread_writes_and_reads_no_more_than_in_a_short_one(backend):
    store = backend.open(durable=True)  # as deployed: every write on disk before it returns
    long_key, short_key = "slack/T1/C1/long", "slack/T1/C1/short"
    turns = conversation(LONG)
    for i in range(0, LONG, 500):
        store.append(long_key, *turns[i:i + 500])
    store.append(short_key, *turns[:4])

    def answer(key: str, i: int) -> None:
        store.append(key, Turn("user", f"Next question {i} on the plan?", ANA.id, time.time(), user_name=ANA.name),
                     Turn("assistant", f"Next answer {i}: " + "fine " * 20, "", time.time()))

    if backend.kind == "redis":
        import redis

        client = redis.Redis.from_url(backend.url)

        def traffic(action) -> tuple[int, int]:
            """Bytes Redis received and sent for `action` (less what reading the counters costs)."""
            def counters():
                stats = client.info("stats")
                return stats["total_net_input_bytes"], stats["total_net_output_bytes"]
            a, b = counters(), counters()
            action()
            c = counters()
            return (c[0] - b[0]) - (b[0] - a[0]), (c[1] - b[1]) - (b[1] - a[1])

        write_long, write_short = traffic(lambda: answer(long_key, 1)), traffic(lambda: answer(short_key, 1))
        assert write_long[0] < write_short[0] + 4096, (write_long, write_short)  # two turns and a fold, not 5,000 turns
        read_long = traffic(lambda: store.get(long_key))[1]
        newest = sum(len(t.to_json()) for t in store.get(long_key).turns)
        assert read_long < newest + 4096, (read_long, newest)  # the stored turns and the header, nothing older
        client.close()
    else:
        for i in range(3):  # warm both
            answer(long_key, i)
            answer(short_key, i)

        def timed(action, n: int = 15) -> float:
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                action()
                samples.append(time.perf_counter() - started)
            return statistics.median(samples)

        appending = timed(lambda: answer(long_key, 9)), timed(lambda: answer(short_key, 9))
        assert appending[0] < 3 * appending[1] + 0.01, appending
        reading = timed(lambda: store.get(long_key)), timed(lambda: store.get(short_key))
        assert reading[0] < 0.05, reading
    assert backend.stored(long_key) == MAX_TURNS and len(store.get(long_key).turns) == MAX_TURNS
    store.close()


# ---- the next answer through the engine -----------------------------------------------------

async def test_the_next_answer_in_a_5000_turn_thread_is_planned_as_fast_as_in_a_short_one(engine_factory, tmp_path):
    """The short thread's 60 turns already fill the history budget: its prompt is as long as the
    long thread's, so what differs is only what the long thread's length costs."""
    data = tmp_path / "data"
    prefill = SessionStore(SqliteSessions(data / "sessions.sqlite", MAX_TURNS, durable=False))
    long_where, short_where = (Conversation("console", "local", "console", t) for t in ("long", "short"))
    turns = conversation(LONG, time.time() - LONG)
    for i in range(0, LONG, 500):
        prefill.append(long_where.session_key, *turns[i:i + 500])
    prefill.append(short_where.session_key, *turns[:60])
    prefill.close()
    from test_ops import long_model

    engine = await engine_factory(make_config(data, knowledge={"enabled": False}, limits={"user_per_minute": 100},
                                              models=long_model(8)))  # planning is measured, not the answer

    prompts = spy_prompts(engine)
    backend = engine.lineup.live
    real_encode, real_count, real_read = backend.encode_chat, backend.count_tokens, engine.sessions.backend.read
    seen = {"counted": 0, "read": [], "planned": 0.0}

    def count(text: str) -> int:
        seen["counted"] += 1
        return real_count(text)

    def encode(messages):
        seen["planned"] = time.perf_counter()
        return real_encode(messages)

    def read(key: str):
        session = real_read(key)
        seen["read"].append(len(session.turns) if session else 0)
        return session

    backend.count_tokens, backend.encode_chat = count, encode
    engine.sessions.backend.read = read

    async def ask(where: Conversation, text: str) -> tuple[float, int, AnswerDone]:
        seen["counted"] = 0
        started = time.perf_counter()
        _, final, _ = await collect(engine, ChatRequest(where=where, user=ANA, text=text))
        assert isinstance(final, AnswerDone), final
        return seen["planned"] - started, seen["counted"], final

    planning = {"long": [], "short": []}
    for i in range(3):
        for name, where in (("long", long_where), ("short", short_where)):
            took, counted, final = await ask(where, f"Which line of the plan is next, {i}?")
            planning[name].append(took)
            if name == "long":
                assert counted < 80, "only the turns that may fit the history budget are tokenized"
                assert final.history_dropped > LONG - MAX_TURNS
                assert f"older messages not shown), people said:" in prompts[-1][0]["content"]
    assert max(seen["read"]) <= MAX_TURNS, "reading a thread reads its stored turns, never its whole life"
    long_s, short_s = statistics.median(planning["long"]), statistics.median(planning["short"])
    assert long_s < 2 * short_s + 0.01, planning


# ---- /metrics over many sessions and votes ---------------------------------------------------

SESSIONS, VOTES = 5000, 20000


def vote_rows(now: float) -> tuple[dict, dict]:
    """Answers and votes as FeedbackStore keeps them: half without the workspace (stored before it was kept)."""
    answers, votes = {}, {}
    for i in range(VOTES):
        answer_id = f"{i:016x}"
        at = now - (i % 10) * DAY_S * 0.99  # no vote near the edge of a window
        answers[answer_id] = AnswerRecord(answer_id, "slack", "T1", "C1", "smollm2-135m", False, 1.0, at).__dict__
        vote = {"positive": i % 4 != 0, "at": at, "model": "smollm2-135m", "comment": ""}
        if i % 2:
            vote["scope"] = "slack/T1"
        votes[f"{answer_id}|U{i % 7}"] = vote
    return answers, votes


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_metrics_over_5000_sessions_and_20000_votes_read_no_session_nor_vote(kind, engine_factory, tmp_path,
                                                                                   monkeypatch):
    from sqlitedict import SqliteDict
    from test_ops import samples, scrape

    now = time.time()
    answers, votes = vote_rows(now)
    data, port = tmp_path / "data", free_port()
    overrides = {"knowledge": {"enabled": False}, "metrics": {"enabled": True, "port": port}}
    with redis_server(tmp_path / "redis") as url:
        if kind == "redis":
            monkeypatch.setenv("PARLEY_TEST_REDIS", url)
            overrides["sessions"] = {"backend": "redis", "redis_url_env": "PARLEY_TEST_REDIS"}
            import redis

            store = SessionStore(RedisSessions.from_url(url, "parley:session:"))
            with redis.Redis.from_url(url) as client:
                pipe = client.pipeline()  # the layout RedisMapping reads (JSON), 40,000 keys at once
                for table, rows in (("answer", answers), ("vote", votes)):
                    for k, v in rows.items():
                        pipe.set(f"parley:state:feedback:{table}:{k}", json.dumps(v))
                pipe.execute()
        else:
            store = SessionStore(SqliteSessions(data / "sessions.sqlite", durable=False))
            for table, rows in (("answers", answers), ("votes", votes)):
                with SqliteDict(str(data / "feedback.sqlite"), tablename=table, autocommit=False) as db:
                    db.update(rows)
                    db.commit()
        for i in range(SESSIONS):
            store.append(f"slack/T1/C1/{i}", Turn("user", f"hello {i}", "U1", now), Turn("assistant", "hi", "", now))
        store.close()

        engine = await engine_factory(make_config(data, **overrides))
        reads = []
        real_read = engine.sessions.backend.read
        monkeypatch.setattr(engine.sessions.backend, "read", lambda key: reads.append(key) or real_read(key))
        took = []
        for _ in range(5):
            started = time.perf_counter()
            status, text = await scrape(port)
            took.append(time.perf_counter() - started)
            assert status == 200
        values = samples(text)
        assert values[("parley_sessions_active", ())] == SESSIONS
        day = [v for v in votes.values() if now - v["at"] <= DAY_S]
        positive = sum(v["positive"] for v in day) / len(day)
        assert values[("parley_feedback_positive_ratio", (("model", "smollm2-135m"), ("window", "day")))] == \
            pytest.approx(positive)
        assert not reads, "no session is read to count them"
        assert statistics.median(took) < 0.1, took
        await engine.stop()


# ---- the layout before ---------------------------------------------------------------------

async def test_a_sessions_file_of_the_old_layout_is_read_then_converted(engine_factory, tmp_path):
    from sqlitedict import SqliteDict

    data = tmp_path / "data"
    data.mkdir()
    where = Conversation("console", "local", "console", "t1")
    now = time.time()
    ada = [Turn("user", "My name is Ada and I keep the spring budget.", ANA.id, now - 60, user_name=ANA.name),
           Turn("assistant", "Nice to meet you, Ada.", "", now - 60)]
    long_turns = conversation(300, now - 300)
    with SqliteDict(str(data / "sessions.sqlite"), tablename="sessions", autocommit=True) as old:
        old[where.session_key] = old_layout(where.session_key, ada, now - 60, SETTINGS)
        old["slack/T1/C1/long"] = old_layout("slack/T1/C1/long", long_turns, now - 30)

    engine = await engine_factory(make_config(data, knowledge={"enabled": False}))
    assert engine.sessions.count() == 2 and engine.sessions.active_since(now - 3600) == 2
    prompts = spy_prompts(engine)
    _, final, _ = await collect(engine, ChatRequest(where=where, user=ANA, text="What do I keep?"))
    assert isinstance(final, AnswerDone)
    assert "My name is Ada and I keep the spring budget." in [m["content"] for m in prompts[0]]
    assert prompts[0][0]["content"].startswith(SETTINGS["prompt"]), "with the prompt the thread started with"
    session = engine.sessions.get(where.session_key)
    assert [t.text for t in session.turns][:2] == [t.text for t in ada] and len(session.turns) == 4
    assert session.settings == SETTINGS, "the thread keeps the settings it started with"
    converted = engine.sessions.get("slack/T1/C1/long")
    assert converted.turns == tuple(long_turns[-MAX_TURNS:]) and converted.folded.turns == 100
    await engine.stop()

    with sqlite3.connect(data / "sessions.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "sessions" not in tables, "the pickled rows are gone once converted"
        assert db.execute("SELECT COUNT(*) FROM session_turns WHERE key = ?", ("slack/T1/C1/long",)).fetchone()[0] \
            == MAX_TURNS
    again = await engine_factory(make_config(data, knowledge={"enabled": False}))
    assert len(again.sessions.get(where.session_key).turns) == 4, "a restart after the conversion loses nothing"


def test_redis_keys_of_the_old_layout_are_converted_once_when_first_opened(tmp_path):
    import redis

    with redis_server(tmp_path / "redis") as url:
        client = redis.Redis.from_url(url)
        now = time.time()
        short, long_ = conversation(6, now - 100, "s"), conversation(300, now - 300, "l")
        client.set("o:slack/T1/C1/short", pickle.dumps(old_layout("slack/T1/C1/short", short, now - 100)), ex=3600)
        client.set("o:slack/T1/C1/long", pickle.dumps(old_layout("slack/T1/C1/long", long_, now - 2000)), ex=3600 - 2000)

        first = SessionStore(RedisSessions.from_url(url, "o:", ttl_seconds=3600))
        second = SessionStore(RedisSessions.from_url(url, "o:", ttl_seconds=3600))  # another bot process
        assert first.count() == 2 and second.active_since(now - 1000) == 1
        assert second.get("slack/T1/C1/short").turns == tuple(short)
        read = second.get("slack/T1/C1/long")
        assert read.turns == tuple(long_[-MAX_TURNS:]) and read.folded.turns == 100

        # Converted when the first process opened the prefix: each process then writes once, none of
        # the turns is lost or doubled.
        for store, n in ((first, 1), (second, 2)):
            store.append("slack/T1/C1/long", Turn("user", f"more {n}", ANA.id, now), Turn("assistant", "ok", "", now))
        session = first.get("slack/T1/C1/long")
        assert [t.text for t in session.turns[-4:]] == ["more 1", "ok", "more 2", "ok"]
        assert session.turns[:-4] == tuple(long_[-MAX_TURNS + 4:]) and session.folded.turns == 104
        assert session.folded == first.get("slack/T1/C1/long").folded == second.get("slack/T1/C1/long").folded
        assert client.type("o:slack/T1/C1/long") == b"hash" and 3500 < client.ttl("o:slack/T1/C1/long") <= 3600
        written = client.keys("o:*")
        assert not any(client.get(k).startswith(b"\x80") for k in written if client.type(k) == b"string"), \
            "nothing pickled is left once opened"
        assert client.type("o:slack/T1/C1/short") == b"hash", "a session never written again is converted too"
        assert first.expire_idle(3600, now=now + 7200) == 2 and second.count() == 0
        for store in (first, second):
            store.close()
        client.close()


# ---- vote counts kept as votes change -------------------------------------------------------

def brute_counts(votes: dict, now: float, scope: str | None = None) -> dict:
    """The counts as the store used to compute them: every vote read."""
    out: dict[str, list[int]] = {}
    for key, vote in votes.items():
        age = now - vote["at"]
        if age > 7 * DAY_S or (scope is not None and vote["scope"] != scope):
            continue
        n = out.setdefault(vote["model"], [0, 0, 0, 0])
        n[2 if vote["positive"] else 3] += 1
        if age <= DAY_S:
            n[0 if vote["positive"] else 1] += 1
    return {m: tuple(n) for m, n in sorted(out.items())}


def shown(store: FeedbackStore, now: float, platform: str | None = None, workspace: str | None = None) -> dict:
    return {c.model: (c.day_up, c.day_down, c.week_up, c.week_down) for c in store.counts(now, platform, workspace)}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_vote_counts_are_kept_as_votes_change_and_survive_a_restart(kind, tmp_path):
    from sqlitedict import SqliteDict

    rng = random.Random(7)
    now = time.time()
    with redis_server(tmp_path / "redis") as url:
        def open_store() -> FeedbackStore:
            if kind == "sqlite":
                path = str(tmp_path / "feedback.sqlite")
                return FeedbackStore(*(SqliteDict(path, tablename=t, autocommit=True) for t in ("answers", "votes", "totals")))
            import redis

            return FeedbackStore(*(RedisMapping.from_url(url, f"f:{t}:") for t in ("answers", "votes", "totals")),
                                 RedisTally(redis.Redis.from_url(url), "f:tally:", 30 * DAY_S))

        # Votes stored before the workspace was kept with them: counted from their answers' records.
        old_answers, old_votes = (SqliteDict(str(tmp_path / "feedback.sqlite"), tablename=t, autocommit=True)
                                  if kind == "sqlite" else RedisMapping.from_url(url, f"f:{t}:")
                                  for t in ("answers", "votes"))
        expected: dict[str, dict] = {}
        for i in range(20):
            record = AnswerRecord(f"old{i:013x}", "slack", f"T{1 + i % 2}", "C1", "m1", False, 1.0, now - i * DAY_S / 3)
            old_answers[record.answer_id] = record.__dict__
            old_votes[f"{record.answer_id}|U1"] = {"positive": i % 3 > 0, "at": record.at, "model": "m1", "comment": ""}
            expected[f"{record.answer_id}|U1"] = {"positive": i % 3 > 0, "at": record.at, "model": "m1",
                                                  "scope": f"slack/{record.workspace}"}
        for mapping in (old_answers, old_votes):
            mapping.close()

        store, other = open_store(), open_store()  # two processes (or, on SQLite, the one and its restart)
        totals: dict[tuple[str, str], int] = {}
        for i in range(300):
            answer_id = f"{i:016x}"
            platform, workspace = rng.choice([("slack", "T1"), ("slack", "T2"), ("discord", "G1")])
            at = now - rng.uniform(0, 10) * DAY_S
            store.register(AnswerRecord(answer_id, platform, workspace, "C1", rng.choice(["m1", "m2"]), False, 1.0, at))
            for user in rng.sample(["U1", "U2", "U3"], rng.randint(1, 3)):
                for positive in rng.sample([True, False], rng.randint(1, 2)):  # sometimes changed
                    result = (store if rng.random() < 0.5 or kind == "sqlite" else other).vote(answer_id, user, positive, at)
                    assert result.known and result.counted
                    total = (result.model, "up" if positive else "down")
                    totals[total] = totals.get(total, 0) + 1
                    expected[f"{answer_id}|{user}"] = {"positive": positive, "at": at, "scope": f"{platform}/{workspace}",
                                                       "model": store.answer(answer_id).model}
        assert shown(store, now) == brute_counts(expected, now)
        assert shown(store, now, "slack", "T2") == brute_counts(expected, now, "slack/T2")
        if kind == "redis":
            assert shown(other, now) == brute_counts(expected, now), "every process counts every vote"
            assert other.totals() == store.totals() == totals
        other.close()
        store.close()
        reopened = open_store()  # a restart: the counts are back, from the stored votes or the shared tally
        assert shown(reopened, now) == brute_counts(expected, now)
        assert reopened.totals() == totals, "the totals behind the Prometheus counters carry on"
        assert shown(reopened, now, "discord", "G1") == brute_counts(expected, now, "discord/G1")
        reopened.close()
