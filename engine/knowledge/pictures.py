"""The text in a picture shared with a question, read in a parse worker (ocr.py says how)."""
from __future__ import annotations

import dataclasses

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.ocr import OCR_MEMORY_MB
from engine.knowledge.sandbox import read_document


def image_text(filename: str, data: bytes, limits: ParseLimits) -> str:
    """The text recognised in an image, read in a parse worker; "" when it holds none.
    ParleyError for a file that is no picture (FILE_UNREADABLE) or past a limit."""
    limits = dataclasses.replace(limits, memory_mb=max(limits.memory_mb, OCR_MEMORY_MB))
    try:
        document = read_document("image", filename, data, limits)
    except ParleyError as exc:
        if exc.code is ErrorCode.FILE_EMPTY:
            return ""
        raise
    return "\n".join(page.text for page in document.pages).strip()
