"""How much reading one uploaded file may cost, and the checks that need no parser.

ParseLimits is what `knowledge.parse_*` configures (README's knowledge table). The checks here
run before a parser sees the bytes, in the bot's process or in the parse worker:

- a zip container (DOCX, PPTX, XLSX) is judged by its central directory alone, never expanded: entry count,
  total expanded size and each large member's compression ratio (a zip bomb deflates zeros
  about 1,000 to 1; a Word document's XML 5-20 to 1, its pictures about 1 to 1);
- text formats (TXT, Markdown, CSV, HTML, EML) may not yield more text than `text_ratio` times
  the bytes uploaded: their text is a part of those bytes, so more means amplification.

DOCX text is bounded by its expanded XML (the zip limits), PDF text by the page cap and the
parse worker's memory limit (engine/knowledge/sandbox.py).
"""
from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.records import PageText

if TYPE_CHECKING:
    from engine.config import KnowledgeConfig

# Formats whose text is a part of the uploaded bytes (no compression in between).
PLAIN_KINDS = frozenset({"text", "markdown", "csv", "html", "eml"})
RATIO_FLOOR = 1 << 20  # members expanding to less than this are not judged by their ratio
TABLE_CHARS_PER_TOKEN = 2.5  # a spreadsheet row's characters per word piece (numbers cut finely)
TEXT_FLOOR = 4096  # characters any file may yield, however small (a 10-byte CSV still reads)
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_CENTRAL_ENTRY_SIZE = 46  # a central directory entry's fixed part: entries <= directory size / 46


@dataclass(frozen=True)
class ParseLimits:
    """The bounds on reading one file (defaults: README, docs/operations.md)."""

    sandbox: bool = True  # read in a parse worker process (false: in the bot's process, as before)
    workers: int = 2  # parse worker processes at most
    memory_mb: int = 1024  # a worker's address space (RLIMIT_AS)
    cpu_seconds: float = 120.0  # CPU time one file may take (RLIMIT_CPU)
    timeout_seconds: float = 300.0  # wall-clock time one file may take
    page_seconds: float = 15.0  # wall-clock time one PDF page may take
    max_pages: int = 2000
    zip_max_entries: int = 5000
    zip_max_mb: float = 256.0  # total expanded size of a zip container
    zip_max_ratio: float = 100.0  # expanded / compressed size of a member over RATIO_FLOOR
    text_ratio: float = 4.0  # text characters per uploaded byte, text formats
    html_max_depth: int = 256
    html_max_nodes: int = 200_000
    table_chars: int = 240  # a spreadsheet's rows per chunk, in characters: knowledge.chunk_tokens' worth

    @classmethod
    def from_config(cls, config: KnowledgeConfig) -> ParseLimits:
        return cls(sandbox=config.parse_sandbox, workers=config.parse_workers, memory_mb=config.parse_memory_mb,
                   cpu_seconds=config.parse_cpu_seconds, timeout_seconds=config.parse_timeout_seconds,
                   page_seconds=config.parse_page_seconds, max_pages=config.parse_max_pages,
                   zip_max_entries=config.parse_zip_max_entries, zip_max_mb=config.parse_zip_max_mb,
                   zip_max_ratio=config.parse_zip_max_ratio, text_ratio=config.parse_text_ratio,
                   html_max_depth=config.parse_html_max_depth, html_max_nodes=config.parse_html_max_nodes,
                   table_chars=int(config.chunk_tokens * TABLE_CHARS_PER_TOKEN))

    def text_budget(self, size: int) -> int:
        """The most characters a text format of `size` bytes may yield."""
        return max(TEXT_FLOOR, int(self.text_ratio * size))


def too_complex(filename: str, why: str) -> ParleyError:
    return ParleyError(ErrorCode.FILE_TOO_COMPLEX,
                       f"{filename} {why}, more than I read safely. Save it as a simpler or smaller "
                       "file (PDF or plain text) and share it again.")


def zip_names(filename: str, data: bytes, limits: ParseLimits) -> set[str]:
    """The member names of a zip container, after its central directory passed the limits.
    FILE_UNREADABLE for a damaged zip, FILE_TOO_COMPLEX past a limit."""
    declared = _declared_entries(data)
    if declared is not None and declared > limits.zip_max_entries:
        raise too_complex(filename, f"is a zip container of about {declared:,} parts "
                                    f"(at most {limits.zip_max_entries:,})")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} looks like a damaged zip/Office file.")
    check_members(filename, [(m.file_size, m.compress_size) for m in members], limits)
    return {m.filename for m in members}


def check_members(filename: str, sizes: Iterable[tuple[int, int]], limits: ParseLimits) -> None:
    """(expanded, compressed) sizes of a container's members against the limits."""
    sizes = list(sizes)
    if len(sizes) > limits.zip_max_entries:
        raise too_complex(filename, f"holds {len(sizes):,} parts (at most {limits.zip_max_entries:,})")
    expanded = sum(size for size, _ in sizes)
    if expanded > limits.zip_max_mb * 2**20:
        raise too_complex(filename, f"expands to {_mb(expanded)} (at most {limits.zip_max_mb:g} MB)")
    for size, packed in sizes:
        if size > RATIO_FLOOR and size > limits.zip_max_ratio * max(packed, 1):
            raise too_complex(filename, f"holds a part compressed {size / max(packed, 1):,.0f} to 1 "
                                        f"(at most {limits.zip_max_ratio:g} to 1)")


def _declared_entries(data: bytes) -> int | None:
    """The entry count the end-of-central-directory record declares, read before zipfile builds a
    record per entry (a 25 MB directory could list 500,000); None when there is no such record
    (zipfile then says what is wrong). A ZIP64 count reads as its directory's upper bound."""
    at = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - 0xFFFF))
    if at < 0 or at + _EOCD_SIZE > len(data):
        return None
    total, directory_size = struct.unpack_from("<HI", data, at + 10)
    if total != 0xFFFF:
        return total
    return directory_size // _CENTRAL_ENTRY_SIZE if directory_size != 0xFFFFFFFF else len(data) // _CENTRAL_ENTRY_SIZE


def check_text(filename: str, kind: str, size: int, pages: Iterable[PageText], limits: ParseLimits) -> None:
    """FILE_TOO_COMPLEX when a text format yielded more than its budget."""
    if kind not in PLAIN_KINDS:
        return
    chars = sum(len(page.text) for page in pages)
    if chars > limits.text_budget(size):
        raise too_complex(filename, f"reads as {chars / max(size, 1):.0f} times more text than its "
                                    f"{_mb(size)} (at most {limits.text_ratio:g} times)")


def _mb(size: int) -> str:
    if size >= 2**30:
        return f"{size / 2**30:,.1f} GB"
    return f"{size / 2**20:,.1f} MB" if size >= 2**20 else f"{size / 1024:,.0f} KB"
