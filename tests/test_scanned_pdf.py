"""Scanned PDFs, as a scanner or a phone's scan app makes them: pages that are pictures of text,
no text layer. Made here (Pillow draws the text on white pages, saved as a PDF), never
downloaded, and ingested through the real path (parse worker, RapidOCR, embedder, Chroma):

- a planted fact on page 3 of a scan is found and cited "page 3 (scanned)", the reading
  progress moves page by page, and /llm-docs says how many pages were scanned;
- in a PDF mixing text pages and a scanned page (a scanner's stamp its only text), the text pages
  keep their text layer and only the scanned page is recognised;
- hostile scans are refused with their code before any page is recognised: 10,000 picture pages,
  more scanned pages than the limits allow, a page picture of 100 megapixels; a scan without a
  word in it says that even OCR read nothing, and the next file is read by a fresh worker.
"""
from __future__ import annotations

import time

import pytest

import docgen
from adapters.chat.documents import documents_text
from adapters.chat.ingest import ingested_text
from adapters.chat.markup import PLAIN, sources_text
from adapters.chat.wording import Wording
from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.citations import to_sources
from engine.knowledge.scanned import scanned_page_cap
from engine.types import Conversation, FileUpload, User

CHANNEL = Conversation("slack", "T1", "C-scans", "1700000000.000300")
ALICE = User("U-alice", "alice")
PLANTED = "The spare key to the server room is kept in locker 47 at the front desk."
NOTICE = ["Facilities notice: the server room", PLANTED,
          "Sign the key log at the front desk when you take the server room key and when you return it."]


def upload(name: str, data: bytes) -> FileUpload:
    return FileUpload(where=CHANNEL, user=ALICE, filename=name, data=data)


def squeezed(text: str) -> str:
    return "".join(text.split())


async def test_a_scanned_fact_is_found_and_cited_by_its_scanned_page(make_kb):
    pages = [docgen.prose_lines(1, 8), docgen.prose_lines(2, 8), NOTICE]
    kb = make_kb()
    seen: list[int] = []
    result = await kb.ingest(upload("scan.pdf", docgen.scanned_pages_pdf(pages)),
                             lambda event: seen.append(event.done) if event.stage == "reading" else None)
    assert seen == [1, 2, 3]  # each page as it was recognised
    assert (result.pages, result.scanned) == (3, 3)
    assert "3 pages (3 scanned)" in ingested_text(result, "scan.pdf")
    passages = await kb.search(CHANNEL, "Where is the spare key to the server room kept?")
    best = passages[0]
    assert squeezed("kept in locker 47 at the front desk") in squeezed(best.text)
    assert best.label() == "scan.pdf page 3 (scanned)"
    shown = sources_text(to_sources([best]), PLAIN)
    assert "scan.pdf page 3 (scanned)" in shown and "p.page" not in shown
    listing = await documents_text(await kb.list_documents(CHANNEL), CHANNEL, False, Wording())
    assert "`scan.pdf` v1 — 3 pages (3 scanned)" in listing


async def test_a_mixed_pdf_keeps_its_text_layer_and_recognises_only_the_scanned_page(make_kb):
    """The scanned page carries a scanner's stamp as text (four words): it is recognised all the same."""
    text_one = ["Quarterly report of the Heron Valley depot.", *docgen.prose_lines(4, 10)]
    text_three = ["Invoice INV-2291/B was paid on 14 March; its balance is 0.00 EUR.", *docgen.prose_lines(5, 10)]
    pdf = docgen.mixed_pdf([("text", text_one), ("stamped", NOTICE), ("text", text_three)])
    kb = make_kb()
    seen: list[int] = []
    result = await kb.ingest(upload("report.pdf", pdf),
                             lambda event: seen.append(event.done) if event.stage == "reading" else None)
    assert (result.pages, result.scanned) == (3, 1)
    assert seen == [1, 2, 3]  # the two text pages read, then the scanned one recognised
    invoice = await kb.search(CHANNEL, "Was invoice INV-2291/B paid?")
    assert "Invoice INV-2291/B was paid on 14 March; its balance is 0.00 EUR." in invoice[0].text  # as typed
    assert invoice[0].label() == "report.pdf p.3"
    key = await kb.search(CHANNEL, "Where is the spare key to the server room kept?")
    assert squeezed("locker 47") in squeezed(key[0].text) and key[0].label() == "report.pdf page 2 (scanned)"


async def test_hostile_scans_are_refused_before_a_page_is_recognised(make_kb):
    kb = make_kb()
    await kb.ingest(upload("notes.txt", docgen.notes_txt()))
    cap = scanned_page_cap(ParseLimits())
    assert cap == 30  # 120 s of CPU time a file, at 4 s a page
    cases = [
        ("pile.pdf", docgen.picture_pages_pdf(10_000), ErrorCode.FILE_TOO_LARGE, "has 10,000 pages"),
        ("stack.pdf", docgen.picture_pages_pdf(cap + 1), ErrorCode.FILE_TOO_LARGE,
         f"has {cap + 1} scanned pages (pages without a text layer); I recognise at most {cap}"),
        ("poster.pdf", docgen.picture_pages_pdf(1, 10_000, 10_000), ErrorCode.FILE_TOO_COMPLEX,
         "holds a picture of 10,000 x 10,000 pixels on its page 1"),
    ]
    for name, data, code, says in cases:
        started = time.monotonic()
        with pytest.raises(ParleyError) as err:
            await kb.ingest(upload(name, data))
        assert err.value.code is code and says in err.value.user_message, err.value.user_message
        assert time.monotonic() - started < 60  # refused from its structure: no page recognised
    with pytest.raises(ParleyError) as err:
        await kb.ingest(upload("grey.pdf", docgen.picture_pages_pdf(2)))
    assert err.value.code is ErrorCode.FILE_NO_TEXT
    assert "no text could be read in it even by OCR" in err.value.user_message
    assert [doc.filename for doc in await kb.list_documents(CHANNEL)] == ["notes.txt"]
    # the worker that loaded the OCR models (950 MB of address space) is not reused for the next file
    assert (await kb.ingest(upload("policy.docx", docgen.policy_docx()))).chunks > 0
