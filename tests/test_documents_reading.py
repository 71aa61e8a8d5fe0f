"""Reading documents as a reader sees them: PDF text without running heads, contents pages kept
out of answers, words kept apart on justified lines, printed page numbers in citations, HTML
sentences whole, text in the encodings Windows writes, sections counted."""
from __future__ import annotations

import logging

import pytest

import docgen
from engine.errors import ErrorCode, ParleyError
from engine.knowledge import loaders
from engine.knowledge.citations import to_sources
from engine.types import Conversation, FileUpload, User

CHANNEL = Conversation("slack", "T1", "CR", "1700000000.000100")
ALICE = User("U-alice", "alice")


def read(name: str, data: bytes):
    return loaders.load(loaders.sniff(name, data), name, data)


def text_of(document) -> str:
    return "\n\n".join(p.text for p in document.pages)


def upload(name: str, data: bytes) -> FileUpload:
    return FileUpload(where=CHANNEL, user=ALICE, filename=name, data=data)


# ---- PDF ---------------------------------------------------------------------------------------

def test_running_headers_and_footers_are_removed():
    document = read("manual.pdf", docgen.manual_pdf())
    text = text_of(document)
    assert docgen.MANUAL_HEADER not in text  # the running header, on every page
    assert "Chapter 2" not in text and "Chapter 4" not in text  # footers of even pages
    for page in document.pages:  # odd pages' footers: the section title and the page number
        assert not page.text.rstrip().endswith(page.label), page.text[-80:]
    assert "Uploads must wait in the delayed queue for at least three days" in text  # the body stays


def test_words_on_justified_lines_keep_their_spaces():
    text = text_of(read("manual.pdf", docgen.manual_pdf()))
    # Every word of these lines is drawn on its own, with no space character between them.
    assert "Security bugs are reported privately to the security team and never in the public tracker." in text
    assert "advocatefor" not in text and "thedelayed" not in text


def test_contents_and_nearly_blank_pages_are_kept_out_of_the_chunks():
    document = read("manual.pdf", docgen.manual_pdf())
    assert document.page_count == 6  # counted: the title page and the contents page were read
    assert [p.page for p in document.pages] == [3, 4, 5, 6]  # but neither is indexed
    assert ". . ." not in text_of(document)


async def test_a_section_title_finds_its_section_not_the_contents_page(make_kb):
    kb = make_kb()
    await kb.ingest(upload("manual.pdf", docgen.manual_pdf()))
    passages = await kb.search(CHANNEL, "Handling security bugs")
    assert passages and passages[0].page == 5 and "reported privately" in passages[0].text
    assert all(p.page not in (1, 2) for p in passages)
    assert passages[0].heading == "3.2 Handling security bugs"


@pytest.mark.parametrize("labels", [True, False], ids=["page-labels", "printed-numbers"])
async def test_citations_show_the_page_number_printed_on_the_page(make_kb, labels):
    kb = make_kb()
    await kb.ingest(upload("manual.pdf", docgen.manual_pdf(page_labels=labels)))
    passages = await kb.search(CHANNEL, "How long must uploads wait in the delayed queue?")
    best = passages[0]
    assert (best.page, best.page_label) == (4, "2")  # the 4th page of the file is printed as 2
    assert best.label() == "manual.pdf p.2"
    assert to_sources([best])[0].page == "2"


def test_a_pdf_of_one_short_page_is_still_read():
    document = read("memo.pdf", docgen.lines_pdf(["Lunch is at noon."]))
    assert text_of(document) == "Lunch is at noon."


# ---- HTML --------------------------------------------------------------------------------------

PAGE = b"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter 5. Uploads</title></head><body>
<div class="navheader"><a href="ch4.html">Prev</a> Chapter 5. Uploads <a href="ch6.html">Next</a></div>
<nav><ul><li><a href="/">Home</a></li><li><a href="/docs">Docs</a></li></ul></nav>
<div class="chapter"><h1 class="title">Chapter 5. Uploads</h1>
<div class="toc"><p><strong>Table of Contents</strong></p><dl><dt>5.1. Delayed uploads</dt></dl></div>
<h2>5.1. Delayed uploads</h2>
<p>Use <code class="literal">dcut cancel</code> to cancel an upload, or see
<a href="tools.html">the <em>tools</em> chapter</a>, which replaces <code>dupload</code>, for more.</p>
<pre>$ dcut cancel foo_1.2-1_all.changes

$ dput ftp-master foo_1.2-1_amd64.changes</pre>
<dl><dt>Files</dt><dd><p>The files the stanza covers, as <code>*</code> patterns.</p></dd></dl>
<table><tr><th>Queue</th><th>Delay</th></tr><tr><td>DELAYED/7</td><td>7 days</td></tr></table>
</div>
<div class="navfooter">Prev Up Next</div><footer>Copyright the authors</footer>
</body></html>"""


def test_html_keeps_inline_text_in_its_sentence_and_drops_navigation(caplog, recwarn):
    with caplog.at_level(logging.WARNING):
        document = read("ch5.xhtml", PAGE)
    assert not [w for w in recwarn if "XMLParsedAsHTML" in type(w.message).__name__]  # no warning for XHTML
    text = text_of(document)
    assert ("Use dcut cancel to cancel an upload, or see the tools chapter, which replaces dupload, for more."
            in text)
    assert text.count("Chapter 5. Uploads") == 1  # the title once, not from <title>, navheader and <h1>
    for chrome in ("Prev", "Home", "Table of Contents", "Copyright the authors"):
        assert chrome not in text, chrome
    assert "$ dcut cancel foo_1.2-1_all.changes\n\n$ dput ftp-master" in text  # <pre> kept as written
    assert "Files: The files the stanza covers, as * patterns." in text
    assert "DELAYED/7 | 7 days" in text
    assert not [r for r in caplog.records if "XMLParsedAsHTML" in r.getMessage() or r.levelno >= logging.WARNING]


async def test_a_code_sample_stays_whole_with_its_heading(make_kb):
    kb = make_kb()
    result = await kb.ingest(upload("ch5.html", PAGE))
    assert result.pages == 0 and result.sections == 2
    chunks = kb.store.chunks.get(include=["documents", "metadatas"])
    holding = [(t, m) for t, m in zip(chunks["documents"], chunks["metadatas"]) if "dcut cancel foo" in t]
    assert len(holding) == 1
    text, meta = holding[0]
    assert "$ dput ftp-master foo_1.2-1_amd64.changes" in text and meta["heading"] == "5.1. Delayed uploads"


# ---- text and its encodings -------------------------------------------------------------------

ENCODED = "Café menu – crème brûlée costs 7 €, naïve “quotes” included.\n\nSecond paragraph here."


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                          ("utf-8", b"\xef\xbb\xbf"), ("cp1252", b"")],
                         ids=["utf-16-le", "utf-16-be", "utf-8-bom", "cp1252"])
async def test_text_in_windows_encodings_is_decoded_from_its_bytes(make_kb, encoding, bom):
    data = bom + ENCODED.encode(encoding)
    assert text_of(read("menu.txt", data)) == ENCODED
    kb = make_kb()
    await kb.ingest(upload("menu.txt", data))
    passages = await kb.search(CHANNEL, "How much does the crème brûlée cost?")
    assert passages and "crème brûlée costs 7 €" in passages[0].text


def test_undecodable_text_is_refused_with_what_to_do():
    with pytest.raises(ParleyError) as err:
        read("noise.txt", docgen.undecodable_txt())
    assert err.value.code is ErrorCode.FILE_BAD_ENCODING
    assert "noise.txt" in err.value.user_message and "UTF-8" in err.value.user_message


def test_wrapped_text_reads_as_sentences_and_numbered_titles_are_sections():
    text = (b"1. Introduction\n\n   The Project is an association of individuals who have\n   made common cause.\n\n"
            b"2.1. General rules\n\n    1. Nothing here imposes an obligation\n       on anyone.\n"
            b"    2. A person may hold several posts.\n")
    document = read("constitution.txt", text)
    blocks = document.pages[0].as_blocks()
    assert [(b.kind, b.text) for b in blocks] == [
        ("heading", "1. Introduction"),
        ("text", "The Project is an association of individuals who have made common cause."),
        ("heading", "2.1. General rules"),
        ("text", "1. Nothing here imposes an obligation on anyone.\n2. A person may hold several posts."),
    ]
    assert document.sections == 2 and document.page_count == 0
