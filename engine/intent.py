"""Is a question plainly about the channel's documents? Then "not found" beats a made-up answer."""
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
