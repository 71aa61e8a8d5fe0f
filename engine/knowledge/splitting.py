"""Split loaded text into chunks sized in the embedding model's own tokens, with overlap.

langchain's RecursiveCharacterTextSplitter does the splitting (paragraphs, then lines, then
sentences, then words). Chunks never cross a page, so every chunk cites one page.
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Iterable

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from engine.knowledge.records import ChunkDraft, PageText

# A run of this many characters without whitespace (base64, a minified blob, a line of dashes)
# is cut into pieces: otherwise the splitter falls back to one call per character.
LONG_RUN = 100
_LONG_RUN = re.compile(r"\S{%d,}" % (LONG_RUN + 1))
_PROSE_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
# pypdf gives one line per printed line, so a line break is mostly a wrap: prefer sentence ends.
_PDF_SEPARATORS = ["\n\n", ". ", "? ", "! ", "\n", "; ", ", ", " ", ""]


def token_counter(tokenizer) -> Callable[[str], int]:
    """Count word pieces of the embedding model's tokenizer, memoised.

    The splitter measures every word of an over-long paragraph separately; words repeat, so a
    cache makes a huge single line cheap. The Rust tokenizer behind a fast HF tokenizer counts
    the same pieces as tokenizer.tokenize() about four times faster.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        from tokenizers import Tokenizer

        # A private copy: the shared one truncates at the model's window (every long text would
        # count 128) and sentence-transformers re-arms truncation on it at every encode.
        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()

        def count(text: str) -> int:
            return len(backend.encode(text, add_special_tokens=False).ids)
    else:
        def count(text: str) -> int:
            return len(tokenizer.tokenize(text))
    return functools.lru_cache(maxsize=200_000)(count)


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int,
                  kind: str) -> RecursiveCharacterTextSplitter:
    separators = (RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
                  if kind == "markdown" else _PDF_SEPARATORS if kind == "pdf" else _PROSE_SEPARATORS)
    if kind == "markdown" and ". " not in separators:  # fall back to sentences before words
        at = separators.index(" ")
        separators = separators[:at] + [". ", "? ", "! ", "; ", ", "] + separators[at:]
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, length_function=count_tokens,
        separators=separators, keep_separator="end", strip_whitespace=True)


def break_long_runs(text: str, limit: int = LONG_RUN) -> str:
    return _LONG_RUN.sub(lambda m: " ".join(m.group(0)[i:i + limit] for i in range(0, len(m.group(0)), limit)),
                         text)


def split_pages(pages: Iterable[PageText], splitter: RecursiveCharacterTextSplitter) -> list[ChunkDraft]:
    drafts: list[ChunkDraft] = []
    for page in pages:
        for piece in splitter.split_text(break_long_runs(page.text)):
            if piece.strip():
                drafts.append(ChunkDraft(text=piece.strip(), page=page.page, index=len(drafts)))
    return drafts
