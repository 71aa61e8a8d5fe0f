"""Questions about documents: is one plainly about the channel's documents (then "not found" beats
a made-up answer), and what is it about (the question rewritten to the part worth searching for)."""
from __future__ import annotations

import re
from pathlib import PurePath
from typing import Iterable

_DOCUMENT_WORDS = re.compile(
    r"\b(documents?|docs?|files?|pdfs?|attachments?|uploads?|uploaded|shared|spreadsheets?|csv|"
    r"reports?|manuals?|handbooks?|policy|policies|contracts?|specs?|specifications?|slides|minutes|"
    r"emails?|pages?|sections?|chapters?|appendix|paragraphs?)\b"
    r"|\baccording to\b|\bwhat does (?:it|the \w+) say\b|\bin the (?:doc|file|pdf|report|text)\b",
    re.IGNORECASE)


def is_document_question(text: str, filenames: Iterable[str] = ()) -> bool:
    """True when the question names documents in general, or one of `filenames` (with or without extension)."""
    if _DOCUMENT_WORDS.search(text):
        return True
    lowered = text.lower()
    for name in filenames:
        stem = PurePath(name).stem.lower()
        if name.lower() in lowered or (len(stem) >= 4 and stem in lowered):
            return True
    return False


_FILE_NAME = r"[\w.-]+\.(?:pdf|docx?|md|markdown|txt|csv|html?|eml)"
_DOC = (rf"(?:{_FILE_NAME}|documents?|docs?|files?|pdfs?|attachments?|uploads?|spreadsheets?|reports?|manuals?|"
        r"handbooks?|polic(?:y|ies)|contracts?|specs?|specifications?|slides|minutes|emails?|wiki|runbook|notes)")
_OWNER = r"(?:the|this|that|these|those|our|your|my|its)"
# "What does the handbook say about", "according to our policy,", "in the report", "report.pdf"...
_REFERENCES = re.compile(
    rf"\b(?:what|how|where|when|who)\s+(?:does|do|did|is|are)\s+(?:{_OWNER}\s+)?{_DOC}\s+"
    rf"(?:say|said|state|mention|tell\s+(?:us|me)|cover|contain|explain|describe)s?\s*(?:about|on|regarding|of)?"
    rf"|\b(?:does|do|did)\s+(?:{_OWNER}\s+)?{_DOC}\s+(?:say|mention|cover|talk\s+about|contain|explain|describe)"
    rf"|\b(?:according\s+to|in|from|within|inside)\s+{_OWNER}\s+(?:shared\s+|uploaded\s+|attached\s+)?{_DOC}"
    rf"|\b{_FILE_NAME}\b",
    re.IGNORECASE)


def topic_of(question: str) -> str:
    """The question without its references to documents, for the similarity search.

    "What does the handbook say about the dress code?" searches for "the dress code": the words
    "the handbook" would otherwise make every passage near a title page look relevant.
    """
    topic = re.sub(r"\s+", " ", _REFERENCES.sub(" ", question)).strip(" ,:;-?!.")
    meaningful = [w for w in re.findall(r"\w+", topic.lower()) if len(w) > 2 and w not in _QUESTION_WORDS]
    return topic if meaningful else question  # "What is in the file?" has no topic left: search it whole


_QUESTION_WORDS = frozenset("what which who whom whose when where why how does did are was were the this that "
                            "there here say says said about tell".split())
