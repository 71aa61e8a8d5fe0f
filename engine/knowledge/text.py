"""Plain text and Markdown: decoded from their bytes, then cut into blocks.

Decoding: a byte-order mark says UTF-8 or UTF-16; else strict UTF-8; else Windows-1252 (what
"ANSI" exports from Windows are), when no byte undefined in it occurs; else charset-normalizer's
best guess, when it is confident. Only bytes that none of them reads are refused.

Blocks: paragraphs are separated by blank lines; their wrapped lines are joined (so a sentence
reads whole) except where a list item starts. Markdown headings (#, underlined) and fenced code
are kept as such; in plain text a lone short line without a full stop, numbered ("2.1. General
rules") or in capitals, is a heading.

CSV: one block per row (a table block: kept whole, several rows to a chunk); see csv_blocks.
"""
from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
import re
from typing import Iterator

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import too_complex
from engine.knowledge.records import Block

log = logging.getLogger(__name__)

_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]\s|\(?\d{1,3}[.)]\s|\(?[a-zA-Z][.)]\s)")
_NUMBERED = re.compile(r"^(?:\d{1,3}\.)+\d{0,3}\s+\S|^(?:article|section|chapter|part|appendix)\s+[\divxlc]+\b",
                       re.IGNORECASE)
_RULE = re.compile(r"^\s*([-_=*~#])\1{3,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CSV_SAMPLE_ROWS = 64  # rows that decide how a CSV's rows are written


def decode(filename: str, data: bytes) -> str:
    """The text of a file's bytes (see the module's doc); FILE_BAD_ENCODING when unreadable."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _bad(filename, f"its {encoding.upper()} text is damaged at byte {exc.start}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        error = exc
    if not _CP1252_UNDEFINED & set(data):
        return data.decode("cp1252")
    guess = _guess(data)
    if guess is not None:
        return guess
    raise _bad(filename, f"byte 0x{data[error.start]:02x} at position {error.start} is not UTF-8, "
                         "Windows-1252 or another encoding I can recognise")


def _guess(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    if best is None or best.chaos > 0.2:
        return None
    try:
        return data.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _bad(filename: str, why: str) -> ParleyError:
    return ParleyError(ErrorCode.FILE_BAD_ENCODING,
                       f"{filename} could not be decoded: {why}. Please save it as UTF-8 and share it again.")


def text_blocks(text: str, markdown: bool = False) -> list[Block]:
    """The blocks of a plain-text or Markdown document."""
    blocks: list[Block] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    paragraph: list[str] = []
    fence: list[str] | None = None
    for line in lines:
        if fence is not None:  # inside fenced code: kept verbatim, blank lines included
            if _FENCE.match(line):
                blocks.append(Block("\n".join(fence).strip("\n"), kind="pre"))
                fence = None
            else:
                fence.append(line)
            continue
        if markdown and _FENCE.match(line):
            _close(paragraph, blocks, markdown)
            fence = []
        elif not line.strip() or _RULE.match(line) and not (markdown and paragraph and line.strip()[0] in "=-"):
            _close(paragraph, blocks, markdown)
        elif markdown and _ATX.match(line):
            _close(paragraph, blocks, markdown)
            marks, title = _ATX.match(line).groups()
            if title:
                blocks.append(Block(title, kind="heading", level=len(marks)))
        elif markdown and paragraph and re.match(r"^\s*(=+|-+)\s*$", line) and len(paragraph) == 1:
            blocks.append(Block(paragraph[0].strip(), kind="heading", level=1 if "=" in line else 2))
            paragraph.clear()
        else:
            paragraph.append(line)
    if fence:
        blocks.append(Block("\n".join(fence).strip("\n"), kind="pre"))
    _close(paragraph, blocks, markdown)
    return blocks


def _close(paragraph: list[str], blocks: list[Block], markdown: bool) -> None:
    if not paragraph:
        return
    if len(paragraph) == 1 and is_heading_line(paragraph[0]) and not markdown:
        title = paragraph[0].strip()
        numbered = re.match(r"^((?:\d{1,3}\.)+\d{0,3})\s", title)
        level = numbered.group(1).rstrip(".").count(".") + 1 if numbered else 1
        blocks.append(Block(title, kind="heading", level=level))
    elif markdown and all(line.startswith(("    ", "\t")) for line in paragraph):
        blocks.append(Block("\n".join(paragraph), kind="pre"))  # an indented code block
    else:
        blocks.append(Block(unwrap(paragraph)))
    paragraph.clear()


def is_heading_line(line: str) -> bool:
    text = line.strip()
    if not text or len(text) > 80 or text.endswith((".", ",", ";", ":", "?", "!")):
        return False
    if _NUMBERED.match(text):
        return len(text.split()) <= 12
    return text.isupper() and len(text.split()) <= 10 and any(c.isalpha() for c in text)


def unwrap(lines: list[str]) -> str:
    """Wrapped lines joined into sentences; each list item starts a line of its own."""
    out: list[str] = []
    for line in lines:
        text = " ".join(line.split())
        if out and not _LIST_ITEM.match(line):
            out[-1] = f"{out[-1]} {text}"
        else:
            out.append(text)
    return "\n".join(out)


# ---- CSV -------------------------------------------------------------------------------------

def csv_blocks(filename: str, text: str, budget: int) -> list[Block]:
    """A CSV's rows as blocks, at most `budget` characters in all (FILE_TOO_COMPLEX beyond).

    A row reads "column: value", a line per non-empty cell, so a question's words meet the column
    they belong to. Where that repeats the column names more than the values say (2,000 columns
    of 40-character names over one-digit values: 40 times the file), the rows read
    "value | value | ..." instead and the names stand once: as the first block, and as the section
    heading that every chunk carries (cut to 120 characters by the splitter). The first rows decide;
    the file is read a row at a time (its cells are never all held at once).
    """
    rows = _csv_rows(filename, text)
    header = [name.strip() for name in next(rows, [])]
    sample = [row for _, row in zip(range(CSV_SAMPLE_ROWS), rows)]
    named = sum(len(_named_row(header, row)) for row in sample)
    compact = sum(len(_compact_row(row)) for row in sample)
    by_name = named <= 2 * compact or len(header) <= 1
    blocks: list[Block] = []
    if not by_name:
        names = " | ".join(header)
        blocks += [Block(names, kind="heading", level=1), Block(names, kind="table")]
    used = sum(len(b.text) + 2 for b in blocks)
    for row in itertools.chain(sample, rows):
        line = _named_row(header, row) if by_name else _compact_row(row)
        if not line:
            continue
        used += len(line) + 2
        if used > budget:
            raise too_complex(filename, f"reads as more than {budget:,} characters of rows")
        blocks.append(Block(line, kind="table"))
    return blocks


def _csv_rows(filename: str, text: str) -> Iterator[list[str]]:
    try:
        yield from csv.reader(io.StringIO(text, newline=""))
    except (csv.Error, ValueError) as exc:
        log.info("csv unreadable", extra={"file": filename, "error": repr(exc)})
        raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as CSV: {exc}")


def _named_row(header: list[str], row: list[str]) -> str:
    """ "column: value" per non-empty cell; cells past the header under no name, as one."""
    lines = [f"{name}: {value.strip()}" for name, value in zip(header, row) if value.strip()]
    extra = ", ".join(value.strip() for value in row[len(header):] if value.strip())
    if extra:
        lines.append(f": {extra}")
    return "\n".join(lines)


def _compact_row(row: list[str]) -> str:
    cells = [value.strip() for value in row]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)
