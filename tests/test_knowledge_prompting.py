"""From passages to the prompt block, the sources shown, and an answer with citations."""
from __future__ import annotations

import pytest

import docgen
from conftest import collect, make_config
from adapters.chat.markup import PLAIN, sources_text
from engine.knowledge import Passage, build_context, to_sources
from engine.knowledge.citations import CONTEXT_HEADER
from engine.types import AnswerDone, ChatRequest, Conversation, FileUpload, Source, User


def words(text: str) -> int:
    return len(text.split())


def passage(text: str, file: str = "report.pdf", page: int | None = 4, score: float = 0.5) -> Passage:
    return Passage(text=text, file=file, page=page, version=1, score=score, channel="C1")


def test_context_tags_each_passage_with_its_source():
    block, used = build_context([passage("Revenue grew 12 percent."), passage("Ship on Tuesdays.", "notes.md", None)],
                                500, words)
    assert block.startswith(CONTEXT_HEADER)
    assert "[1] report.pdf p.4: Revenue grew 12 percent." in block
    assert "[2] notes.md: Ship on Tuesdays." in block
    assert [p.file for p in used] == ["report.pdf", "notes.md"]


def test_context_stays_within_the_budget_and_numbers_what_it_keeps():
    long = passage("word " * 300, "long.pdf", 1)
    short = passage("The answer is 42.", "short.txt", None)
    budget = words(CONTEXT_HEADER) + 60
    block, used = build_context([passage("alpha " * 30, "a.pdf", 2), long, short], budget, words)
    assert words(block) <= budget
    assert [p.file for p in used] == ["a.pdf", "short.txt"]  # the long one is skipped, not cut
    assert "[2] short.txt: The answer is 42." in block


def test_a_first_passage_too_long_for_the_budget_is_cut_not_dropped():
    budget = words(CONTEXT_HEADER) + 20
    block, used = build_context([passage("evidence " * 100)], budget, words)
    assert used and words(block) <= budget and block.rstrip().endswith("…")


def test_no_passages_no_context():
    assert build_context([], 500, words) == ("", [])
    assert build_context([passage("x " * 50)], 3, words) == ("", [])


def test_sources_carry_a_short_excerpt_and_the_sources_list_names_each():
    text = ("Employees receive 27 days of paid annual leave. Public holidays come on top. "
            "The rest of this page is about the pension scheme and goes on for a while longer than needed.")
    sources = to_sources([passage(text, "handbook.pdf", 2, 0.61), passage("Other text.", "handbook.pdf", 2),
                          passage("Notes.", "notes.md", None)])
    assert sources[0] == Source(file="handbook.pdf", page=2, score=0.61, version=1,
                                excerpt="Employees receive 27 days of paid annual leave. Public holidays come on top.")
    assert all(len(s.excerpt) <= 230 for s in sources)
    listed = sources_text(sources, PLAIN)  # the one renderer of sources, in the console's plain style
    assert listed.startswith("Sources:") and "[1] handbook.pdf p.2" in listed and "[3] notes.md" in listed
    assert sources_text((), PLAIN) == ""


@pytest.mark.slow
async def test_an_answer_from_a_shared_pdf_cites_file_and_page(tmp_path, engine_factory, embedder):
    engine = await engine_factory(make_config(tmp_path / "data"))
    where = Conversation("slack", "T1", "C1", "1700000000.000100")
    result = await engine.ingest(FileUpload(where=where, user=User("U1"), filename="handbook.pdf",
                                            data=docgen.handbook_pdf()))
    assert (result.pages, result.version) == (5, 1)
    _, final, _ = await collect(engine, ChatRequest(where, User("U1"), "How many vacation days do staff get each year?"))
    assert isinstance(final, AnswerDone)
    assert final.sources and final.sources[0].label() == "handbook.pdf p.2"
    assert "27 days" in final.sources[0].excerpt
    # another channel has no such document: no sources there
    elsewhere = Conversation("slack", "T1", "C2", "1700000000.000200")
    _, other, _ = await collect(engine, ChatRequest(elsewhere, User("U1"), "How many vacation days do staff get each year?"))
    assert not getattr(other, "sources", ())


@pytest.mark.parametrize("question, topic", [
    ("What does the handbook say about the dress code?", "the dress code"),
    ("According to the report, how much did revenue grow?", "how much did revenue grow"),
    ("What does runbook.md say about disk alerts?", "disk alerts"),
    ("In the shared PDF, who signs off on large bills?", "who signs off on large bills"),
    ("What is the policy on passwords?", "What is the policy on passwords"),  # "policy" is the topic here
    ("How many vacation days do staff get each year?", "How many vacation days do staff get each year"),
    ("What is in the file?", "What is in the file?"),  # nothing but the reference: searched whole
])
def test_questions_are_searched_without_their_references_to_documents(question, topic):
    from engine.knowledge.questions import topic_of

    assert topic_of(question) == topic
