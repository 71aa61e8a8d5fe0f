"""Scanned PDF pages: a page without a text layer is rendered and its text recognised (OCR, with
ocr.py's RapidOCR and its way of reading a picture), in the parse worker, page by page.

The page image is rendered by PDFium rather than taken from the page's embedded pictures (pypdf),
measured on a 150-dpi A4 scan on the 2-core EPYC: pypdf took its picture out in 0.018 s, PDFium
rendered the page in 0.026 s (960 px high) and 0.041 s (2304 px), and recognising its 40 lines
takes 3-4 s, so time does not choose. Rendering reads every encoding a scanner writes (JBIG2,
CCITT fax, JPEG 2000, which pypdf cannot all decode), shows what the page shows (a picture
cropped, rotated, split in strips or under a stamp, text drawn as outlines), needs no second
PDF library at run time (pypdf is only the tests'), and its resolution is ours. A page's lines
are found on it rendered DET_SIDE pixels high (0.3-0.5 s; the whole 1240 x 1754 page took
1.4-2.4 s and found no more), then each is read from a second rendering where its type is
ocr.LINE_PX high: a sharper picture than enlarging the first.

Bounded (the "Hostile input and cost" limits, bounds.py): a picture on the page larger than
ocr.MAX_PIXELS is refused before it is decoded; the renderings stay within MAX_PIXELS; a file
with more pages to recognise than its CPU and time limits allow at PAGE_SECONDS a page is
refused before the first is read (scanned_page_cap); each page stays within page_seconds.
"""
from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.ocr import MAX_PIXELS, recognise, with_ocr_memory

log = logging.getLogger(__name__)

DET_SIDE = 960  # pixels of a page's longer side where its lines are found
PAGE_SECONDS = 4.0  # CPU seconds a scanned page is budgeted at (a 40-line page: 3-4 s on the 2-core EPYC)
SUFFIX = " (scanned)"  # what a recognised page's citation says after its number


class OcrLine(NamedTuple):
    """A line recognised on a page, in PDF points (y upwards), as pdf.py's lines are."""

    top: float
    bottom: float
    left: float
    text: str


def reading_limits(kind: str, limits: ParseLimits) -> ParseLimits:
    """The limits a file of `kind` is read under: a PDF may hold scanned pages, and onnxruntime
    needs ocr.OCR_MEMORY_MB of address space to recognise them."""
    return with_ocr_memory(limits) if kind == "pdf" else limits


def scanned_page_cap(limits: ParseLimits) -> int:
    """The most pages without a text layer one file may ask to recognise: what its CPU time and
    wall-clock limits allow at PAGE_SECONDS a page (30 with the defaults)."""
    return max(1, int(min(limits.cpu_seconds, limits.timeout_seconds) / PAGE_SECONDS))


def page_label(label: str, index: int) -> str:
    """A recognised page's citation: "page 12 (scanned)", its printed number where known."""
    return f"page {label or index + 1}{SUFFIX}"


def is_scanned_label(label: str) -> bool:
    return label.endswith(SUFFIX)


def needs_ocr(page: Any, words: int, few: int) -> bool:
    """Whether a PDFium page is recognised: it has no text layer but shows something (a blank page
    is not), or fewer than `few` words of text over a picture covering half the page or more (a
    scan with a stamped page number or date)."""
    import pypdfium2.raw as pdfium_c

    if words == 0:
        return pdfium_c.FPDFPage_CountObjects(page.raw) > 0
    if words >= few:
        return False
    width, height = page.get_size()
    for picture in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        left, bottom, right, top = picture.get_bounds()
        if (right - left) * (top - bottom) >= 0.5 * width * height:
            return True
    return False


def recognise_page(page: Any, filename: str, number: int) -> list[OcrLine]:
    """The lines of text recognised on a PDFium page, top to bottom; [] when it holds none."""
    _check_pictures(page, filename, number)
    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return []
    scale = min(DET_SIDE / max(width, height), math.sqrt(MAX_PIXELS / (width * height)))
    lines = recognise(lambda at: _render(page, at), width, height, scale)
    return [OcrLine(top=height - line.top, bottom=height - line.bottom, left=line.left, text=line.text)
            for line in lines]


def _check_pictures(page: Any, filename: str, number: int) -> None:
    """FILE_TOO_COMPLEX for a picture on the page too large to decode (before PDFium decodes it)."""
    import pypdfium2.raw as pdfium_c

    for picture in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        width, height = picture.get_px_size()
        if width * height > MAX_PIXELS:
            raise too_complex(filename, f"holds a picture of {width:,} x {height:,} pixels on its page {number}")


def _render(page: Any, scale: float) -> Any:
    """The page in grey, as the three-channel (BGR) array RapidOCR takes."""
    import cv2
    import numpy

    bitmap = page.render(scale=scale, grayscale=True)
    try:
        grey = numpy.array(bitmap.to_numpy(), copy=True).reshape(bitmap.height, bitmap.width)  # its own memory
    finally:
        bitmap.close()
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
