"""Slide decks (PPTX, python-pptx) and workbooks (XLSX, openpyxl read-only) as pages of blocks.

A slide is a page: its title (a heading), its text frames and tables in shape order, then its
speaker notes; the page's label, "slide 4", is what a citation shows. A worksheet's used range
is cut into groups of rows that each fit about one chunk; every group is a table block that
starts with the sheet's header row (so each chunk says what its columns are), and its label is
the sheet name and cell range ("Sheet1!A1:F40"). Formulas read as the values the file cached
when it was last saved (data_only=True); nothing is calculated.

Both are zip containers, judged by bounds.zip_names before either library opens them, as DOCX is.
Slides are capped at the page limit, cells at MAX_CELLS; memory and CPU are the parse worker's.
"""
from __future__ import annotations

import io
import logging
import re
from typing import Any, Callable, Iterable, Iterator

from engine.errors import ErrorCode, ParleyError
from engine.knowledge.bounds import ParseLimits, too_complex, zip_names
from engine.knowledge.records import Block, PageText

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]
MAX_CELLS = 2_000_000  # non-empty cells one workbook may yield
CELL_CHARS = 500  # a cell's text past this is cut ("…")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # a sheet name Excel writes without quotes
_PASSED_ON = (ParleyError, MemoryError, RecursionError)


def _page(number: int, label: str, blocks: list[Block]) -> PageText:
    return PageText(page=number, text="\n\n".join(b.text for b in blocks), label=label, blocks=tuple(blocks))


def _unreadable(filename: str, what: str, exc: BaseException) -> ParleyError:
    log.info("office file unreadable", extra={"file": filename, "error": repr(exc)})
    return ParleyError(ErrorCode.FILE_UNREADABLE, f"{filename} could not be read as {what}; it may be corrupt.")


# ---- PPTX ------------------------------------------------------------------------------------

def load_pptx(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    """One page per slide: title, text frames, tables and speaker notes."""
    from pptx import Presentation

    zip_names(filename, data, limits)
    try:
        slides = list(Presentation(io.BytesIO(data)).slides)
        if len(slides) > limits.max_pages:
            raise too_complex(filename, f"has {len(slides):,} slides (at most {limits.max_pages:,})")
        pages = []
        for number, slide in enumerate(slides, 1):
            pages.append(_page(number, f"slide {number}", _slide_blocks(slide)))
            on_page(number, len(slides))
    except _PASSED_ON:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, lxml and python-pptx raise their own types on bad input
        raise _unreadable(filename, "a PowerPoint deck", exc)
    return pages


def _slide_blocks(slide: Any) -> list[Block]:
    title = slide.shapes.title
    blocks = []
    if title is not None and title.has_text_frame and title.text_frame.text.strip():
        blocks.append(Block(" ".join(title.text_frame.text.split()), kind="heading", level=1))
    for shape in _shapes(slide.shapes):
        if title is not None and shape.shape_id == title.shape_id:
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in shape.table.rows]
            if any(r.strip(" |") for r in rows):
                blocks.append(Block("\n".join(rows), kind="table"))
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            blocks.extend(Block(p) for p in _paragraphs(shape.text_frame))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = " ".join(_paragraphs(slide.notes_slide.notes_text_frame))
        if notes:
            blocks.append(Block(f"Speaker notes: {notes}"))
    return blocks


def _shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """Shapes in order, a group's shapes in its place."""
    for shape in shapes:
        if hasattr(shape, "shapes"):
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _paragraphs(frame: Any) -> list[str]:
    return [" ".join(p.text.split()) for p in frame.paragraphs if p.text.strip()]


# ---- XLSX ------------------------------------------------------------------------------------

def load_xlsx(filename: str, data: bytes, on_page: PageCallback, limits: ParseLimits) -> list[PageText]:
    """Each sheet's used range as tables of rows, the header row first in every one."""
    import openpyxl

    zip_names(filename, data, limits)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except _PASSED_ON:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, lxml and openpyxl raise their own types on bad input
        raise _unreadable(filename, "an Excel workbook", exc)
    pages: list[PageText] = []
    try:
        sheets = book.worksheets
        cells = [0]
        for done, sheet in enumerate(sheets, 1):
            rows = _sheet_rows(filename, sheet, cells)
            pages.extend(_sheet_pages(sheet.title, rows, limits.table_chars, first=len(pages) + 1))
            on_page(done, len(sheets))
    except _PASSED_ON:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged sheet part
        raise _unreadable(filename, "an Excel workbook", exc)
    finally:
        book.close()
    return pages


def _sheet_rows(filename: str, sheet: Any, cells: list[int]) -> list[tuple[int, list[str]]]:
    """(row number, cell texts from column A) of a sheet's non-empty rows; `cells` counts
    non-empty cells across the workbook against MAX_CELLS."""
    rows = []
    for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
        texts = [_cell(v) for v in values]
        while texts and not texts[-1]:
            texts.pop()
        if not texts:
            continue
        cells[0] += sum(1 for t in texts if t)
        if cells[0] > MAX_CELLS:
            raise too_complex(filename, f"holds more than {MAX_CELLS:,} filled cells")
        rows.append((number, texts))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def _sheet_pages(title: str, rows: list[tuple[int, list[str]]], budget: int, first: int) -> list[PageText]:
    """The used range's rows in groups of about `budget` characters, each led by the header row."""
    if not rows:
        return []
    left = min(next(i for i, t in enumerate(texts) if t) for _, texts in rows)
    right = max(len(texts) for _, texts in rows)
    lines = [(number, " | ".join(texts[left:right] + [""] * (right - len(texts)))) for number, texts in rows]
    header = lines[0][1]
    heading = Block(title, kind="heading", level=1)
    pages: list[PageText] = []
    group: list[tuple[int, str]] = [lines[0]]
    size = len(header)
    for number, line in lines[1:]:
        if len(group) > 1 and size + len(line) + 1 > budget:
            pages.append(_group_page(title, heading, header, group, (left, right), first + len(pages), first))
            group, size = [], len(header)
        group.append((number, line))
        size += len(line) + 1
    pages.append(_group_page(title, heading, header, group, (left, right), first + len(pages), first))
    return pages


def _group_page(title: str, heading: Block, header: str, group: list[tuple[int, str]],
                columns: tuple[int, int], number: int, first_of_sheet: int) -> PageText:
    from openpyxl.utils import get_column_letter

    lines = [line for _, line in group]
    if number > first_of_sheet:  # the first group starts with the header row itself
        lines.insert(0, header)
    span = f"{get_column_letter(columns[0] + 1)}{group[0][0]}:{get_column_letter(columns[1])}{group[-1][0]}"
    name = title if _PLAIN_NAME.fullmatch(title) else "'" + title.replace("'", "''") + "'"
    return _page(number, f"{name}!{span}", [heading, Block("\n".join(lines), kind="table")])
