"""Ingests as bounded jobs (engine/knowledge/ingest_queue.py), through the real parts: six 2 MB
uploads at once through slack-bolt (the fake Slack on loopback) while a question in another channel
is answered, no step of it waiting in asyncio's default pool behind an ingest; the per-person and
global caps with the places in line shown on the progress messages; a waiting ingest cancelled with
/llm-docs; the shutdown cancelling every ingest, each sharer told, nothing half-registered in the
store reopened afterwards. And summaries: work in flight that the shutdown waits for, ending with
"Summary stopped: Parley is restarting", never a partial summary."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docgen
import pytest

from conftest import ROOT, make_config
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, FileUpload, User
from test_slack import ADA, CHANNEL, LIN, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

BEN = "U0BEN"
CY = "U0CY"
OTHER = "C0OTHER"
QUESTION = "Who gets paged first when an alert fires?"
# asyncio.to_thread work an answer does: session read and write, channel settings, the search and
# its excerpts, the prompt's plan
ANSWER_STEPS = ("SessionStore.get", "SessionStore.append", "ChannelSettingsStore", "KnowledgeBase.search_sync",
                "KnowledgeBase.quote_sync", "AnswerPipeline._prepare.<locals>.plan")


class WatchedPool(ThreadPoolExecutor):
    """asyncio's default pool, its size as asyncio makes it, each call's wait for a thread and
    how long it ran recorded."""

    def __init__(self) -> None:
        super().__init__(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="default-pool")
        self.calls: list[dict] = []

    def submit(self, fn, /, *args, **kwargs):
        inner = fn.args[0] if getattr(fn, "args", None) else fn  # to_thread: partial(context.run, func, ...)
        inner = getattr(inner, "func", inner)
        call = {"name": getattr(inner, "__qualname__", repr(inner)), "queued": time.monotonic(),
                "started": None, "ended": None}
        self.calls.append(call)

        def run(*a, **k):
            call["started"] = time.monotonic()
            try:
                return fn(*a, **k)
            finally:
                call["ended"] = time.monotonic()

        return super().submit(run, *args, **kwargs)

    def since(self, mark: int) -> list[dict]:
        return self.calls[mark:]


def markdown(seed: int, size: int = 2 * 2**20) -> bytes:
    """A 2 MB Markdown document of everyday paragraphs under numbered headings (seeded: each differs)."""
    lines = []
    for i, paragraph in enumerate(docgen.everyday_paragraphs(13_300, seed=seed)):
        if i % 40 == 0:
            lines.append(f"\n## Part {i // 40} of document {seed}\n")
        lines.append(paragraph + "\n")
    return "\n".join(lines).encode()[:size]


def stored(data_dir: Path) -> tuple[int, int]:
    """(documents, chunks) of the store under `data_dir`, read by a fresh process."""
    code = ("import json, sys; from pathlib import Path; from engine.config import KnowledgeConfig; "
            "from engine.knowledge.store import open_store; s = open_store(KnowledgeConfig(), Path(sys.argv[1])); "
            "print(json.dumps(s.counts())); s.close()")
    out = subprocess.run([sys.executable, "-c", code, str(data_dir)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


async def share(h, name: str, data: bytes, user: str) -> str:
    """`user` shares a file in the channel; returns the message's ts (its thread has the progress)
    once the engine has taken the file in hand (running or in line)."""
    ts = h.fake.next_ts()
    file = h.fake.add_file(name, data, "text/markdown", channel=CHANNEL, ts=ts, user=user)
    assert await h.send(h.fake.message("", user=user, ts=ts, subtype="file_share", files=[file])) == 200
    where = Conversation("slack", h.fake.team_id, CHANNEL, "")
    await h.fake.wait_for(lambda: h.engine.knowledge.active_ingest(where, name) is not None, 60,
                          f"{name} taken in hand")
    return ts


def shown(h, ts: str) -> str:
    [note] = h.fake.bot_messages(CHANNEL, ts)
    return note.text


async def ask(h, question: str, channel: str) -> float:
    """Lin mentions Parley in `channel`; the seconds until the answer is shown and saved."""
    asked = time.monotonic()
    body = h.fake.mention(question, user=LIN, channel=channel)
    ts = body["event"]["ts"]
    assert await h.send(body) == 200
    await h.fake.wait_for(lambda: h.turns(ts, channel) == 2, 120, "the answer, saved to its session")
    [answer] = h.fake.bot_messages(channel, ts)
    assert answer.text.strip() and ":warning:" not in answer.text
    return time.monotonic() - asked


async def docs_command(h, text: str, user: str) -> str:
    """/llm-docs, without waiting for the adapter to be idle (the ingests keep it busy)."""
    body, key = h.fake.command("/llm-docs", text, user=user)
    assert await h.send(body) == 200
    await h.fake.wait_for(lambda: h.fake.responses_for(key), 30, "the command's answer")
    return h.fake.responses_for(key)[0]["text"]


async def test_six_uploads_wait_their_turn_while_a_question_is_answered_and_a_shutdown_keeps_nothing(
        slack_factory, tmp_path):
    pool = WatchedPool()
    asyncio.get_running_loop().set_default_executor(pool)
    h = await slack_factory(knowledge=True, max_new_tokens=24)
    h.fake.add_user(BEN, "Ben")
    h.fake.add_user(CY, "Cy")
    line = h.engine.knowledge.ingests.line
    assert (line.caps.running, line.caps.per_user) == (2, 1), "the defaults"
    files = [("ada-1.md", ADA), ("ada-2.md", ADA), ("ada-3.md", ADA), ("ben-1.md", BEN), ("ben-2.md", BEN),
             ("cy-1.md", CY)]
    data = {name: markdown(seed) for seed, (name, _) in enumerate(files)}
    assert all(len(d) == 2 * 2**20 for d in data.values())
    # The channel asked in has a document, so that its questions search (and embed the question).
    runbook_ts = h.fake.next_ts()
    runbook = h.fake.add_file("runbook.md", docgen.runbook_md(), "text/markdown", channel=OTHER, ts=runbook_ts,
                              user=LIN)
    assert await h.send(h.fake.message("", user=LIN, channel=OTHER, ts=runbook_ts, subtype="file_share",
                                       files=[runbook])) == 200
    await h.fake.wait_for(lambda: "Indexed" in h.fake.thread_text(OTHER, runbook_ts), 60, "runbook.md indexed")
    runbook_chunks = h.engine.knowledge.stats()["chunks"]
    idle_s = await ask(h, QUESTION, OTHER)  # the same question's time with nothing indexing
    mark = len(pool.calls)
    ingestor = h.engine.knowledge.ingestor
    real_run = ingestor.run
    ingest_threads: set[str] = set()

    def run(*args, **kwargs):  # where each ingest's blocking work runs
        ingest_threads.add(threading.current_thread().name)
        return real_run(*args, **kwargs)

    ingestor.run = run

    ts = {}
    for name, user in files:  # one after the other, so that the order in line is known
        ts[name] = await share(h, name, data[name], user)
        if name == "ada-2.md":
            assert (line.running, line.waiting) == (1, 1), "one of Ada's at a time, though a slot is free"
    # Ada's first runs; her second and third wait although a slot is free (one of hers at a time);
    # Ben's first takes that slot; the rest wait for the two running (two at a time in all).
    assert (line.running, line.waiting) == (2, 4)
    expected = {"ada-2.md": "it is next", "ada-3.md": "1 file ahead of this one", "ben-2.md": "2 files ahead",
                "cy-1.md": "3 files ahead"}
    for name, place in expected.items():
        await h.fake.wait_for(lambda n=name, p=place: p in shown(h, ts[n]), 30, f"{name}'s place in line")
        assert shown(h, ts[name]).startswith(f"_Waiting to index `{name}`"), shown(h, ts[name])
    for name in ("ada-1.md", "ben-1.md"):
        assert "Waiting" not in " ".join(h.fake.bot_messages(CHANNEL, ts[name])[0].history)

    # A question in another channel while they index: answered, and nothing it did waited for a thread.
    asked = time.monotonic()
    answered_s = await ask(h, QUESTION, OTHER)
    assert h.engine.knowledge.stats()["documents"] == 1 and line.running == 2, "answered before any ingest ended"
    steps = [c for c in pool.since(mark) if c["queued"] >= asked and c["name"].startswith(ANSWER_STEPS)]
    assert {"SessionStore.get", "KnowledgeBase.search_sync"} <= {c["name"] for c in steps}, pool.calls[mark:]
    # The answer's last steps (the session's write) may still be running as its reply lands.
    await h.fake.wait_for(lambda: all(c["ended"] is not None for c in steps), 30, "the answer's steps ended")
    waits = {c["name"]: round(c["started"] - c["queued"], 3) for c in steps}
    ran = {c["name"]: round(c["ended"] - c["started"], 3) for c in steps}
    assert max(waits.values()) < 1.0, f"an answer step waited for a thread of the default pool: {waits}"
    assert len(ingest_threads) == 2 and not any(t.startswith("default-pool") for t in ingest_threads), \
        f"ingests run on threads of their own, never the answer's pool: {ingest_threads}"
    print(f"\nanswered in {answered_s:.2f} s while 2 ingests ran and 4 waited ({idle_s:.2f} s with none); "
          f"its steps waited {waits} for a thread and ran {ran}")

    # Ada cancels her file waiting in line: it leaves at once, the ones behind it move up.
    assert (await docs_command(h, "cancel ada-3.md", ADA)).startswith("Stopped indexing")
    await h.fake.wait_for(lambda: "CANCELLED" in shown(h, ts["ada-3.md"]), 30, "the cancelled file's note")
    assert "nothing of it was kept" in shown(h, ts["ada-3.md"])
    assert line.waiting == 3
    await h.fake.wait_for(lambda: "1 file ahead" in shown(h, ts["ben-2.md"]), 30, "ben-2.md moving up")
    await h.fake.wait_for(lambda: "2 files ahead" in shown(h, ts["cy-1.md"]), 30, "cy-1.md moving up")

    # Shutdown, as bot.py does it (the adapter still runs): every ingest is cancelled, its sharer told.
    started = time.monotonic()
    await h.engine.stop()
    assert time.monotonic() - started < 30
    for name in ("ada-1.md", "ada-2.md", "ben-1.md", "ben-2.md", "cy-1.md"):
        await h.fake.wait_for(lambda n=name: "Parley is restarting" in shown(h, ts[n]), 30, f"{name}'s note")
        note = shown(h, ts[name])
        assert f"I couldn't index `{name}`" in note and "SHUTTING_DOWN" in note and "nothing of it was kept" in note
    documents, chunks = stored(tmp_path / "data")
    assert (documents, chunks) == (1, runbook_chunks), "the runbook alone is in the store"


@pytest.fixture
async def engine(engine_factory, embedder, tmp_path):
    return await engine_factory(make_config(tmp_path / "data", knowledge={"max_concurrent_ingests": 1,
                                                                          "max_queued_ingests": 1}))


ALICE = User("U-alice", "alice")
BOB = User("U-bob", "bob")
HERE = Conversation("console", "local", "console", "t-jobs")


def upload(name: str, user: User, data: bytes | None = None) -> FileUpload:
    return FileUpload(where=HERE, user=user, filename=name, data=data or docgen.huge_single_line(words=30_000))


async def test_a_full_line_refuses_and_a_shutdown_while_storing_undoes_the_write(engine, tmp_path):
    store = engine.knowledge.store
    real_add = store.add_chunks
    written = threading.Event()
    release = threading.Event()

    def add_chunks(*args, **kwargs):  # the chunks are in the store, not yet registered
        real_add(*args, **kwargs)
        written.set()
        release.wait(60)

    store.add_chunks = add_chunks
    places: list[tuple[str, int]] = []
    first = asyncio.create_task(engine.ingest(upload("first.md", ALICE, docgen.runbook_md())))
    second = asyncio.create_task(engine.ingest(upload("second.txt", BOB),
                                               lambda p: places.append((p.stage, p.done))))
    await asyncio.sleep(0.5)
    assert places == [("queued", 0)], "the second waits, told it is next"
    with pytest.raises(ParleyError) as full:
        await engine.ingest(upload("third.txt", BOB))
    assert full.value.code is ErrorCode.QUEUE_FULL and "third.txt" in full.value.user_message

    await asyncio.to_thread(written.wait, 60)
    stopping = asyncio.create_task(engine.stop())
    await asyncio.sleep(0.5)  # the stop has cancelled both; the first's write is still held
    assert not stopping.done(), "the stop waits for the running ingest to undo its write"
    release.set()
    await asyncio.wait_for(stopping, 60)
    for task, name in ((first, "first.md"), (second, "second.txt")):
        with pytest.raises(ParleyError) as stopped:
            await task
        assert stopped.value.code is ErrorCode.SHUTTING_DOWN
        assert name in stopped.value.user_message and "Parley is restarting" in stopped.value.user_message
    assert [stage for stage, _ in places] == ["queued"], "the waiting one never started"
    assert stored(tmp_path / "data") == (0, 0), "the chunks written were deleted, nothing registered"


async def test_a_summary_is_work_in_flight_and_stops_saying_so(slack_factory, monkeypatch):
    from engine import summaries

    h = await slack_factory(max_new_tokens=24)
    real = summaries.Summariser.generate
    ended: list[float] = []

    async def generate(self, instructions, lines):  # a part that takes a moment to wind down
        try:
            return await real(self, instructions, lines)
        finally:
            if h.engine.state != "ready":
                await asyncio.sleep(1.0)

    monkeypatch.setattr(summaries.Summariser, "generate", generate)
    real_summarize = h.engine.summarize

    async def summarize(*args, **kwargs):
        try:
            return await real_summarize(*args, **kwargs)
        finally:
            ended.append(time.monotonic())

    monkeypatch.setattr(h.engine, "summarize", summarize)
    root = h.fake.add_message("Daily status thread.", user=ADA)
    for i in range(90):
        h.fake.add_message(f"Update {i}: the field team checked site {i} and found the pumps working. "
                           "Water levels are normal and nobody reported a problem.", user=(ADA, LIN)[i % 2],
                           thread_ts=root.ts)
    body, _ = h.fake.shortcut("summarize_thread", root, user=ADA)
    assert await h.send(body) == 200
    await h.fake.wait_for(lambda: "parts" in h.fake.thread_text(CHANNEL, root.ts), 120, "the summary under way")

    await h.engine.stop()
    stopped_at = time.monotonic()
    assert ended and ended[0] <= stopped_at, "the stop waited for the summary"
    await h.fake.wait_for(lambda: "restarting" in h.fake.thread_text(CHANNEL, root.ts), 30, "the summary's note")
    [note] = h.fake.bot_messages(CHANNEL, root.ts)
    assert "Summary stopped: Parley is restarting" in note.text and "CANCELLED" in note.text
    assert not any(text.startswith("*Summary of") for text in note.history), "no partial summary was shown"
