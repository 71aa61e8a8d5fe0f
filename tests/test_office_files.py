"""Slide decks and spreadsheets, as people share them: a PPTX and an XLSX made here with planted
facts are read in the parse worker, indexed, and the facts found and cited by slide and by sheet
and cell range; formulas read as the values the file saved; a workbook that is a zip bomb is
refused from its directory, with its code."""
from __future__ import annotations

import io
import time
import zipfile

import pytest

from adapters.chat.ingest import ingested_text
from adapters.chat.markup import PLAIN, sources_text
from engine.errors import ErrorCode, ParleyError
from engine.knowledge import loaders
from engine.knowledge.citations import to_sources
from engine.types import Conversation, FileUpload, User
from officegen import deck, workbook

CHANNEL = Conversation("slack", "T1", "C-office", "1700000000.000200")
ALICE = User("U-alice", "alice")


def upload(name: str, data: bytes) -> FileUpload:
    return FileUpload(where=CHANNEL, user=ALICE, filename=name, data=data)


async def test_a_deck_is_read_slide_by_slide_and_cited_by_slide(make_kb):
    kb = make_kb()
    result = await kb.ingest(upload("plan.pptx", deck()))
    assert result.pages == 3
    assert "3 slides" in ingested_text(result, "plan.pptx")
    passages = await kb.search(CHANNEL, "What is the codename of the beta launch?")
    best = passages[0]
    assert "Operation Bluefin" in best.text and best.label() == "plan.pptx slide 2"
    assert best.heading == "Launch schedule"
    notes = await kb.search(CHANNEL, "How much is the travel budget for the offsite?")
    assert "41,500 euros" in notes[0].text and notes[0].label() == "plan.pptx slide 3"
    shown = sources_text(to_sources([best, notes[0]]), PLAIN)
    assert "[1] plan.pptx slide 2" in shown and "[2] plan.pptx slide 3" in shown
    assert "p.slide" not in shown
    listed = (await kb.list_documents(CHANNEL))[0]
    assert (listed.filename, listed.pages) == ("plan.pptx", 3)


async def test_a_workbook_row_is_found_under_its_header_and_cited_by_sheet_and_range(make_kb):
    kb = make_kb()
    result = await kb.ingest(upload("orders.xlsx", workbook()))
    assert "2 sheets" in ingested_text(result, "orders.xlsx")
    passages = await kb.search(CHANNEL, "Zephyr Lumber Cooperative order")
    best = next(p for p in passages if "Zephyr Lumber Cooperative" in p.text)
    lines = best.text.split("\n")
    assert lines[0] == "Order | Customer | Region | Units | Price | Total"  # the header, repeated
    assert "SO-10170 | Zephyr Lumber Cooperative | East | 9 | 12.5 | 112.5" in lines  # the formula's saved value
    sheet, cells = best.page_label.split("!")
    first, last = (int(end.lstrip("ABCDEF")) for end in cells.split(":"))
    assert sheet == "Sales" and cells.startswith("A") and ":F" in cells
    assert first <= 171 <= last and first > 1  # row 171 holds order 170; a later group's own range
    assert best.label() == f"orders.xlsx Sales!{cells}"
    assert f"orders.xlsx Sales!{cells}" in sources_text(to_sources([best]), PLAIN)
    owner = await kb.search(CHANNEL, "Who is the owner?")
    assert any(p.page_label == "Notes!B2:C2" and "Owner | Ana" in p.text for p in owner)


def _bomb_workbook() -> bytes:
    """A valid workbook whose first sheet is 64 MiB of zeros deflated about 1,000 to 1."""
    with zipfile.ZipFile(io.BytesIO(workbook(rows=5))) as real:
        parts = {name: real.read(name) for name in real.namelist()}
    parts["xl/worksheets/sheet1.xml"] = bytes(64 << 20)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for name, data in parts.items():
            bomb.writestr(name, data)
    return out.getvalue()


async def test_a_workbook_zip_bomb_is_refused_from_its_directory(make_kb):
    bomb = _bomb_workbook()
    assert len(bomb) < 2**20
    kb = make_kb()
    with pytest.raises(ParleyError) as err:
        await kb.ingest(upload("budget.xlsx", bomb))
    assert err.value.code is ErrorCode.FILE_TOO_COMPLEX
    assert "budget.xlsx holds a part compressed" in err.value.user_message
    assert await kb.list_documents(CHANNEL) == []


def test_decks_and_workbooks_are_sniffed_by_content_and_damaged_ones_are_unreadable():
    assert loaders.sniff("slides", deck()) == "pptx"
    assert loaders.sniff("export.bin.xlsx", workbook(rows=2)) == "xlsx"
    with pytest.raises(ParleyError) as err:
        loaders.sniff("sheet.xlsx", b"Order,Customer\n1,Ana\n\x00")
    assert err.value.code is ErrorCode.FILE_UNREADABLE and "sheet.xlsx is not a valid XLSX file" in err.value.user_message
    for name, part in (("deck.pptx", "ppt/presentation.xml"), ("book.xlsx", "xl/workbook.xml")):
        damaged = io.BytesIO()
        with zipfile.ZipFile(damaged, "w") as z:
            z.writestr("[Content_Types].xml", "<Types/>")
            z.writestr(part, "<not-quite")
        data = damaged.getvalue()
        with pytest.raises(ParleyError) as err:
            loaders.load(loaders.sniff(name, data), name, data)
        assert err.value.code is ErrorCode.FILE_UNREADABLE and err.value.user_message.startswith(f"{name} could not be read")


def test_a_5000_row_workbook_is_read_in_seconds():
    data = workbook(rows=5000, planted_at=4000)
    started = time.perf_counter()
    document = loaders.load("xlsx", "big.xlsx", data)
    seconds = time.perf_counter() - started
    assert seconds < 20, seconds  # about 0.3 s here: a generous bound, not a benchmark
    labels = [p.label for p in document.pages]
    assert labels[0].startswith("Sales!A1:F") and labels[-1] == "Notes!B2:C2"
    assert all(p.text.split("\n\n")[1].startswith("Order | Customer") for p in document.pages[:-1])
    assert sum(p.text.count("SO-1") for p in document.pages) == 5000
