"""The document formats Parley reads, by file name: what loaders.py sniffs and loads, and what an
adapter downloads (anything else attached, an image or an archive, is not fetched at all)."""
from __future__ import annotations

SUPPORTED = "PDF, DOCX, PPTX, XLSX, TXT, Markdown, HTML, CSV or EML"
TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".log": "text", ".rst": "text",
                   ".md": "markdown", ".markdown": "markdown",
                   ".html": "html", ".htm": "html", ".xhtml": "html",
                   ".csv": "csv", ".eml": "eml"}
DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", ".pptx", ".xlsx", ".xlsm", *TEXT_EXTENSIONS})
# Pictures whose text is read (engine/knowledge/ocr.py) when shared with a question, not indexed.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
# What a document's pages and sections are called in replies (/llm-docs, "Indexed …"), by file name.
_UNITS = {".pptx": ("slide", "section"), ".xlsx": ("page", "sheet"), ".xlsm": ("page", "sheet")}


def units(filename: str, count: int, sections: bool = False, scanned: int = 0) -> str:
    """"3 pages", "1 slide", "2 sheets", "20 pages (20 scanned)": `count` of a file's pages, or of
    its sections; `scanned` of the pages were read by OCR."""
    suffix = filename[filename.rfind("."):].lower() if "." in filename else ""
    unit = _UNITS.get(suffix, ("page", "section"))[sections]
    read = f" ({scanned} scanned)" if scanned and not sections else ""
    return f"{count} {unit}{'s' if count != 1 else ''}{read}"
