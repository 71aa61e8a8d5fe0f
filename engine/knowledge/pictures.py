"""The text in a picture shared with a question, read in a parse worker (ocr.py says how)."""
from __future__ import annotations

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits
from engine.knowledge.ocr import with_ocr_memory
from engine.knowledge.sandbox import read_document


def image_text(filename: str, data: bytes, limits: ParseLimits) -> str:
    """The text recognised in an image, read in a parse worker; "" when it holds none.
    ParleyError for a file that is no picture (FILE_UNREADABLE) or past a limit."""
    try:
        document = read_document("image", filename, data, with_ocr_memory(limits))
    except ParleyError as exc:
        if exc.code is ErrorCode.FILE_EMPTY:
            return ""
        raise
    return "\n".join(page.text for page in document.pages).strip()
