"""Slide decks and workbooks with planted facts, made here (tests and bench/ingest.py use them)."""
from __future__ import annotations

import io

import xlsxwriter
from pptx import Presentation
from pptx.util import Inches


def deck() -> bytes:
    """Three slides: bullets, a table (the launch codename) and speaker notes (the budget)."""
    prs = Presentation()
    intro = prs.slides.add_slide(prs.slide_layouts[1])
    intro.shapes.title.text = "Quarterly plan"
    intro.placeholders[1].text = "The team ships the mobile app redesign this quarter."
    launch = prs.slides.add_slide(prs.slide_layouts[5])
    launch.shapes.title.text = "Launch schedule"
    table = launch.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(1.5)).table
    for row, (left, right) in enumerate([("Milestone", "Codename"), ("Beta launch", "Operation Bluefin"),
                                         ("General availability", "Operation Osprey")]):
        table.cell(row, 0).text = left
        table.cell(row, 1).text = right
    hiring = prs.slides.add_slide(prs.slide_layouts[1])
    hiring.shapes.title.text = "Hiring"
    hiring.placeholders[1].text = "Two engineers join in May."
    hiring.notes_slide.notes_text_frame.text = "Tell them the travel budget for the offsite is 41,500 euros."
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def workbook(rows: int = 300, planted_at: int = 170) -> bytes:
    """A Sales sheet of `rows` orders (a header row, then one order a row, a formula's cached
    value in its Total column) with one planted order, and a second, small sheet."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sales = book.add_worksheet("Sales")
    sales.write_row(0, 0, ["Order", "Customer", "Region", "Units", "Price", "Total"])
    for i in range(1, rows + 1):
        customer = "Zephyr Lumber Cooperative" if i == planted_at else f"Customer {i % 37}"
        units, price = (i % 9) + 1, 12.5
        sales.write_row(i, 0, [f"SO-{10000 + i}", customer, ("North", "South", "East")[i % 3], units, price])
        sales.write_formula(i, 5, f"=D{i + 1}*E{i + 1}", None, units * price)
    notes = book.add_worksheet("Notes")
    notes.write_row(1, 1, ["Owner", "Ana"])
    book.close()
    return out.getvalue()
