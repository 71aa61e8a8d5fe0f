"""Ingest bounds and control: a document too big for this machine is refused with its limit, an
ingest in progress can be cancelled by its sharer or an admin (and leaves nothing behind), and
the console shows progress while it works, piped or not."""
from __future__ import annotations

import asyncio
import io

import pytest

import docgen
from conftest import make_config
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, FileUpload, User

CONSOLE = Conversation("console", "local", "console", "t-ingest")
ADMIN = User("console", "admin")  # an admin by make_config's admins
BOB = User("U-bob", "bob")
ALICE = User("U-alice", "alice")


async def test_a_document_over_the_chunk_limit_is_refused_with_the_limit_stated(make_kb):
    kb = make_kb(max_ingest_minutes=0.001)  # the floor: 100 chunks
    with pytest.raises(ParleyError) as err:
        await kb.ingest(FileUpload(where=CONSOLE, user=ALICE, filename="big.txt",
                                   data=docgen.huge_single_line(words=20_000)))
    assert err.value.code is ErrorCode.FILE_TOO_LARGE
    message = err.value.user_message
    assert "big.txt" in message and "at most 100" in message and "a second" in message
    assert kb.stats()["chunks"] == 0 and kb.active_ingest(CONSOLE, "big.txt") is None


@pytest.fixture
async def engine(engine_factory, embedder, tmp_path):
    return await engine_factory(make_config(tmp_path / "data"))


async def start_ingest(engine, user: User, name: str = "big.txt") -> tuple[asyncio.Task, asyncio.Event]:
    """An ingest running in the background, and an event set once it is embedding."""
    embedding = asyncio.Event()

    def progress(p) -> None:
        if p.stage == "embedding":
            embedding.set()

    task = asyncio.create_task(engine.ingest(
        FileUpload(where=CONSOLE, user=user, filename=name, data=docgen.huge_single_line(words=30_000)), progress))
    await asyncio.wait_for(embedding.wait(), 60)
    return task, embedding


async def test_an_admin_cancels_an_ingest_and_nothing_of_it_is_kept(engine):
    task, _ = await start_ingest(engine, ALICE)
    with pytest.raises(ParleyError) as forbidden:
        await engine.cancel_ingest(CONSOLE, "big.txt", BOB)  # neither the sharer nor an admin
    assert forbidden.value.code is ErrorCode.FORBIDDEN
    assert await engine.cancel_ingest(CONSOLE, "other.txt", ADMIN) is False  # nothing by that name
    assert await engine.cancel_ingest(CONSOLE, "big.txt", ADMIN) is True
    with pytest.raises(ParleyError) as cancelled:
        await task
    assert cancelled.value.code is ErrorCode.CANCELLED
    assert "big.txt" in cancelled.value.user_message and "nothing of it was kept" in cancelled.value.user_message
    assert await engine.list_documents(CONSOLE) == []
    assert engine.knowledge.stats()["chunks"] == 0
    assert await engine.cancel_ingest(CONSOLE, "big.txt", ADMIN) is False  # it is over


async def test_the_sharer_may_cancel_their_own_ingest(engine):
    task, _ = await start_ingest(engine, BOB, "mine.txt")
    assert await engine.cancel_ingest(CONSOLE, "mine.txt", BOB) is True
    with pytest.raises(ParleyError) as cancelled:
        await task
    assert cancelled.value.code is ErrorCode.CANCELLED
    # the same name can be shared again at once
    result = await engine.ingest(FileUpload(where=CONSOLE, user=BOB, filename="mine.txt", data=docgen.notes_txt()))
    assert result.version == 1 and result.chunks > 0


async def test_piped_console_upload_prints_progress_then_cancel_stops_another(engine, tmp_path):
    from adapters.console import ConsoleAdapter

    small = tmp_path / "notes.txt"
    small.write_bytes(docgen.notes_txt())
    big = tmp_path / "big.txt"
    big.write_bytes(docgen.huge_single_line(words=30_000))
    stdin = io.StringIO(f"/upload {small}\n/docs\n/upload {big}\n/cancel big.txt\n/docs\n")
    stdout = io.StringIO()
    await ConsoleAdapter(engine, stdin=stdin, stdout=stdout, interactive=False).run()
    out = stdout.getvalue().splitlines()
    assert "Reading notes.txt…" in out
    assert any(line.startswith("Embedding notes.txt: ") and line.endswith(" chunks") for line in out), out
    indexed = next(i for i, line in enumerate(out) if line.startswith("Indexed notes.txt:"))
    assert out[indexed + 1].startswith("notes.txt  v1  ")  # /docs waited for the upload before it
    assert "Cancelling big.txt…" in out
    failed = [line for line in out if line.startswith("I couldn't index big.txt:")]
    assert failed and "CANCELLED" in failed[0]
    listed = [line for line in out if line.startswith(("notes.txt  ", "big.txt  "))]
    assert listed == [out[indexed + 1], out[indexed + 1]]  # big.txt never appears in /docs
