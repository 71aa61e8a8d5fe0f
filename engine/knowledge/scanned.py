"""Scanned PDF pages: a page without a text layer is rendered and its text recognised (OCR, with
the RapidOCR engine of ocr.py), in the parse worker, page by page.

The page image is rendered by PDFium rather than taken from the page's embedded pictures (pypdf):
rendering reads every encoding a scanner writes (JBIG2, CCITT fax, JPEG 2000, which pypdf cannot
all decode), shows what the page shows (a picture cropped, rotated or split in strips), and costs
0.02-0.04 s an A4 page at 150 dpi (measured on the 2-core EPYC), where recognising it costs
seconds: the choice is by what it reads, not by its time.

Two resolutions, measured on a 150-dpi page of prose (bench/ocr_engines.py): lines are found on
the page rendered DET_SIDE pixels high (0.3-0.5 s; the whole 1240 x 1754 page took 1.4-2.4 s and
found no more), then each line is cut from a second rendering where its text is LINE_PX high:
the recognizer ran the words of 17-26 px lines together ("Thearchitecturereviewboard", 14% of
the characters wrong) and keeps their spaces at 40 px (under 1%). Lines are read one at a time
(batches of 6 were padded to the longest line and took twice the CPU time), and RapidOCR's
direction classifier is not used: it turned 5 of 15 upright lines of a page upside down.

Bounded (the "Hostile input and cost" limits, bounds.py): a picture on the page larger than
ocr.MAX_PIXELS is refused before it is decoded; the renderings are at most MAX_PIXELS; a file
with more pages to recognise than its CPU and time limits allow at PAGE_SECONDS a page is
refused before the first is read (scanned_page_cap); each page stays within page_seconds.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from typing import Any, NamedTuple

from engine.knowledge.bounds import ParseLimits, too_complex
from engine.knowledge.ocr import MAX_PIXELS, MIN_SCORE, OCR_MEMORY_MB, ocr_engine

log = logging.getLogger(__name__)

DET_SIDE = 960  # pixels of a page's longer side where its lines are found
LINE_PX = 40  # a line's height, in pixels, where its words are read
MAX_ZOOM = 4.0  # a line is enlarged at most this much for reading
PAGE_SECONDS = 3.0  # CPU seconds a scanned page is budgeted at (measured: 1-2 s on the 2-core EPYC)
SUFFIX = " (scanned)"  # what a recognised page's citation says after its number


class OcrLine(NamedTuple):
    """A line recognised on a page, in PDF points (y upwards), as pdf.py's lines are."""

    top: float
    bottom: float
    left: float
    text: str


def reading_limits(kind: str, limits: ParseLimits) -> ParseLimits:
    """The limits a file of `kind` is read under: a PDF may hold scanned pages, and onnxruntime
    needs OCR_MEMORY_MB of address space to recognise them (ocr.py)."""
    if kind != "pdf":
        return limits
    return dataclasses.replace(limits, memory_mb=max(limits.memory_mb, OCR_MEMORY_MB))


def scanned_page_cap(limits: ParseLimits) -> int:
    """The most pages without a text layer one file may ask to recognise: what its CPU time and
    wall-clock limits allow at PAGE_SECONDS a page (40 with the defaults)."""
    return max(1, int(min(limits.cpu_seconds, limits.timeout_seconds) / PAGE_SECONDS))


def page_label(label: str, index: int) -> str:
    """A recognised page's citation: "page 12 (scanned)", its printed number where known."""
    return f"page {label or index + 1}{SUFFIX}"


def is_scanned_label(label: str) -> bool:
    return label.endswith(SUFFIX)


def has_marks(page: Any) -> bool:
    """Whether a page without text shows anything at all (a blank page is not recognised)."""
    import pypdfium2.raw as pdfium_c

    return pdfium_c.FPDFPage_CountObjects(page.raw) > 0


def recognise_page(page: Any, filename: str, number: int) -> list[OcrLine]:
    """The lines of text recognised on a PDFium page, top to bottom; [] when it holds none."""
    _check_pictures(page, filename, number)
    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return []
    scale = min(DET_SIDE / max(width, height), math.sqrt(MAX_PIXELS / (width * height)))
    image = _render(page, scale)
    engine = ocr_engine()
    boxes, _ = engine.auto_text_det(image)
    if not boxes:
        return []
    tall = statistics.median(_height(box) for box in boxes)
    zoom = min(MAX_ZOOM, max(1.0, LINE_PX / max(tall, 1.0)),
               math.sqrt(MAX_PIXELS / (width * height)) / scale)
    sharp = _render(page, scale * zoom) if zoom > 1.05 else image
    crops = engine.get_crop_img_list(sharp, [box * (sharp.shape[0] / image.shape[0]) for box in boxes])
    found, _ = engine.text_rec(crops)
    pixels_per_point = image.shape[0] / height
    words = [(box, " ".join(text.split())) for box, (text, score) in zip(boxes, found)
             if float(score) >= MIN_SCORE and text.strip()]
    return _lines(words, height, pixels_per_point)


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
        grey = numpy.ascontiguousarray(bitmap.to_numpy()).reshape(bitmap.height, bitmap.width)
    finally:
        bitmap.close()
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _height(box: Any) -> float:
    return float(max(abs(box[3][1] - box[0][1]), abs(box[2][1] - box[1][1])))


def _lines(words: list[tuple[Any, str]], height: float, pixels_per_point: float) -> list[OcrLine]:
    """Boxes side by side (their middles within one another's height) make one line, left to right."""
    placed = sorted(((float(min(p[1] for p in box)), float(max(p[1] for p in box)),
                      float(min(p[0] for p in box)), text) for box, text in words),
                    key=lambda item: (item[0] + item[1]) / 2)
    rows: list[list[tuple[float, float, float, str]]] = []
    for item in placed:
        middle = (item[0] + item[1]) / 2
        if rows and rows[-1][0][0] <= middle <= rows[-1][0][1]:
            rows[-1].append(item)
        else:
            rows.append([item])
    lines = []
    for row in rows:
        row.sort(key=lambda item: item[2])
        top = min(item[0] for item in row)
        bottom = max(item[1] for item in row)
        lines.append(OcrLine(top=height - top / pixels_per_point, bottom=height - bottom / pixels_per_point,
                             left=row[0][2] / pixels_per_point, text=" ".join(item[3] for item in row)))
    return lines
