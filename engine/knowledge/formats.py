"""The document formats Parley reads, by file name: what loaders.py sniffs and loads, and what an
adapter downloads (anything else attached, an image or an archive, is not fetched at all)."""
from __future__ import annotations

SUPPORTED = "PDF, DOCX, TXT, Markdown, HTML, CSV or EML"
TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".log": "text", ".rst": "text",
                   ".md": "markdown", ".markdown": "markdown",
                   ".html": "html", ".htm": "html", ".xhtml": "html",
                   ".csv": "csv", ".eml": "eml"}
DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", *TEXT_EXTENSIONS})
