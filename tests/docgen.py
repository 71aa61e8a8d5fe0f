"""Generate test documents of every supported type, with facts planted among filler text.

Each Fact says which file holds it, a phrase that proves a passage contains it, and a question
that asks for it in other words. Bad inputs (corrupt, encrypted, scanned, non-UTF-8, ...) are
generated here too. Everything is made in memory; nothing is read from disk or the network.
"""
from __future__ import annotations

import csv
import io
import random
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class Fact:
    file: str
    text: str  # the sentence planted in the document
    proof: str  # a phrase only a passage holding the fact contains
    question: str  # a paraphrase a user might ask
    page: int | None = None  # PDF page the fact is on


FACTS: list[Fact] = [
    # handbook.pdf: pages 2-5
    Fact("handbook.pdf", "Employees receive 27 days of paid annual leave per calendar year, in addition to public holidays.",
         "27 days of paid annual leave", "How many vacation days do staff get each year?", 2),
    Fact("handbook.pdf", "The company pension scheme matches employee contributions up to 6 percent of base salary.",
         "matches employee contributions", "How much does the employer put towards retirement savings?", 2),
    Fact("handbook.pdf", "The office wireless network is called Heron-5G and its guest password changes every Monday.",
         "Heron-5G", "What's the name of the Wi-Fi in the office?", 3),
    Fact("handbook.pdf", "Expense claims must be submitted within 45 days of purchase through the Ledgerly portal.",
         "within 45 days of purchase", "What is the deadline for filing reimbursement requests?", 4),
    Fact("handbook.pdf", "In case of fire, the assembly point is the north car park next to the bicycle shelter.",
         "north car park", "Where should we gather if the fire alarm goes off?", 5),
    # policy.docx
    Fact("policy.docx", "Passwords must be at least 14 characters long and are rotated every 180 days.",
         "at least 14 characters", "What's the minimum length for a login password?"),
    Fact("policy.docx", "A lost or stolen laptop must be reported to the security desk at extension 4410 within one hour.",
         "extension 4410", "Who do I call if my work notebook computer goes missing?"),
    Fact("policy.docx", "Signed customer invoices are retained for seven years in the finance archive.",
         "retained for seven years", "How long do we keep invoices?"),
    # wiki.html
    Fact("wiki.html", "The staging database is backed up every night at 02:30 UTC to the Zurich region.",
         "02:30 UTC", "When does the staging DB backup run?"),
    Fact("wiki.html", "Deployments to production are frozen every Friday after 3 pm until Monday morning.",
         "frozen every Friday", "Am I allowed to release to prod on a Friday afternoon?"),
    Fact("wiki.html", "The on-call rotation hands over every Tuesday at 10:00 during the team stand-up.",
         "hands over every Tuesday", "On which day does the on-call duty switch to the next person?"),
    # runbook.md
    Fact("runbook.md", "To restart the ingest worker, run systemctl restart orca-ingest and wait for the health check on port 9137.",
         "orca-ingest", "How do I reboot the ingestion service?"),
    Fact("runbook.md", "Disk alerts fire when a data volume is 85 percent full.",
         "85 percent full", "At what storage usage level do the disk warnings trigger?"),
    Fact("runbook.md", "Application logs are kept for 30 days in the Loki cluster and then deleted.",
         "30 days in the Loki cluster", "How long are log files retained?"),
    # inventory.csv (rows)
    Fact("inventory.csv", "Projector,Meeting room Maple,3,Brightlux",
         "Brightlux", "Which vendor supplies the projectors?"),
    Fact("inventory.csv", "Standing desk,Second floor open space,14,ErgoNordic",
         "ErgoNordic", "How many standing desks do we have?"),
    Fact("inventory.csv", "Espresso machine,Kitchen,2,Bean and Barrel",
         "Bean and Barrel", "Where did we buy the coffee machine from?"),
    # budget.eml
    Fact("budget.eml", "The Q3 marketing budget was approved at 84,000 euros.",
         "84,000 euros", "How much money did marketing get for the third quarter?"),
    Fact("budget.eml", "The team offsite will take place in Lisbon on 12 September.",
         "Lisbon", "Where is the team retreat being held?"),
    Fact("budget.eml", "Invoices above 10,000 euros need approval from the CFO before payment.",
         "approval from the CFO", "Who has to sign off on large bills?"),
    # notes.txt
    Fact("notes.txt", "The customer Acme Rail renewed their contract for three more years.",
         "Acme Rail renewed", "Did Acme Rail extend their agreement with us?"),
    Fact("notes.txt", "Our largest competitor, Nimbus Freight, raised its prices by 8 percent this spring.",
         "Nimbus Freight", "By how much did our main rival increase its pricing?"),
    Fact("notes.txt", "The new office in Leeds opens on 3 March with twenty desks.",
         "office in Leeds", "When does the Leeds branch open?"),
]

# Filler on unrelated subjects, so that a fact has to be found among other text.
FILLER = [
    "The quarterly town hall covered progress on the customer portal redesign and the hiring plan for the "
    "design team. Several people asked about the timeline for the mobile release, which depends on the API work.",
    "Meeting notes: the group reviewed the open tickets, agreed to close the stale ones, and moved the "
    "remaining items to the next sprint. Action items were assigned to the owners listed in the tracker.",
    "The style guide recommends short sentences, active voice, and concrete examples. Headings should be "
    "written in sentence case, and acronyms spelled out the first time they appear in a document.",
    "Our onboarding programme pairs every new colleague with a buddy for the first month. The buddy helps "
    "with tools, introductions, and the unwritten rules of the team.",
    "The research summary compares three approaches to caching product images and recommends the simplest "
    "one, since the measured difference in page load time was within the noise of the experiment.",
    "Facilities reminded everyone to label food in the shared fridge; unlabelled items are removed on "
    "Thursdays. The plants on the third floor are watered by a volunteer rota.",
    "The architecture review board meets monthly. Proposals should include the problem statement, the "
    "options considered, the chosen design, and how success will be measured after launch.",
    "Customer interviews showed that people want clearer invoices, faster support replies, and an export "
    "button on the reports page. The product team will prioritise these in the roadmap.",
]


def filler(seed: int, paragraphs: int = 2) -> list[str]:
    rng = random.Random(seed)
    return rng.sample(FILLER, paragraphs)


def facts_for(file: str) -> list[Fact]:
    return [f for f in FACTS if f.file == file]


# ---- good documents --------------------------------------------------------------------------

def make_pdf(pages: list[list[str]], *, title: str = "") -> bytes:
    """A text PDF (reportlab) with one list of paragraphs per page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    out = io.BytesIO()
    story = []
    if title:
        story.append(Paragraph(title, styles["Title"]))
    for i, paragraphs in enumerate(pages):
        if i:
            story.append(PageBreak())
        story.extend(Paragraph(p, styles["BodyText"]) for p in paragraphs)
    # invariant: no creation date or random id, so the same call gives the same bytes
    SimpleDocTemplate(out, pagesize=A4, title=title or "document", invariant=1).build(story)
    return out.getvalue()


def handbook_pdf() -> bytes:
    pages: list[list[str]] = [["Welcome to the company handbook. It explains how we work together."] + filler(1)]
    for page in (2, 3, 4, 5):
        facts = [f.text for f in facts_for("handbook.pdf") if f.page == page]
        pages.append(filler(page, 1) + facts + filler(page + 10, 1))
    return make_pdf(pages, title="Company handbook")


def policy_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Information security policy", 1)
    document.add_paragraph(filler(20, 1)[0])
    facts = facts_for("policy.docx")
    document.add_heading("Accounts", 2)
    document.add_paragraph(facts[0].text)
    document.add_heading("Devices", 2)
    document.add_paragraph(facts[1].text)
    document.add_paragraph(filler(21, 1)[0])
    document.add_heading("Retention", 2)
    table = document.add_table(rows=3, cols=2)
    for row, (a, b) in zip(table.rows, [("Record", "Rule"), ("Customer invoices", facts[2].text),
                                         ("Meeting notes", "Kept for one year, then deleted.")]):
        row.cells[0].text, row.cells[1].text = a, b
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def simple_docx(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def wiki_html() -> bytes:
    facts = facts_for("wiki.html")
    body = "".join(f"<p>{p}</p>" for p in filler(30, 1))
    body += f"<h2>Backups</h2><p>{facts[0].text}</p><h2>Releases</h2><ul><li>{facts[1].text}</li></ul>"
    body += "".join(f"<p>{p}</p>" for p in filler(31, 1))
    body += f"<h2>On-call</h2><table><tr><td>Rotation</td><td>{facts[2].text}</td></tr></table>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Platform wiki</title>"
            f"<style>p {{ color: #333 }}</style><script>var tracking = 'no facts here';</script></head>"
            f"<body><h1>Platform wiki</h1>{body}</body></html>").encode("utf-8")


def runbook_md() -> bytes:
    facts = facts_for("runbook.md")
    return textwrap.dedent(f"""\
        # Operations runbook

        {filler(40, 1)[0]}

        ## Restarting services

        {facts[0].text}

        ## Alerts

        - {facts[1].text}
        - Paging goes to the primary on-call first.

        ## Logging

        {facts[2].text}

        {filler(41, 1)[0]}
        """).encode("utf-8")


def inventory_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["item", "location", "quantity", "supplier"])
    rng = random.Random(50)
    things = ["Office chair", "Monitor", "Keyboard", "Whiteboard", "Desk lamp", "Filing cabinet",
              "Headset", "Webcam", "Printer", "Bookshelf", "Sofa", "Plant pot"]
    places = ["First floor", "Reception", "Meeting room Oak", "Third floor", "Storage room"]
    vendors = ["OfficeHub", "Deskline", "Paperway", "Northwind Supplies"]
    rows = [[t, rng.choice(places), str(rng.randint(1, 40)), rng.choice(vendors)] for t in things]
    for fact in facts_for("inventory.csv"):
        rows.insert(rng.randint(0, len(rows)), fact.text.split(","))
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def budget_eml() -> bytes:
    facts = facts_for("budget.eml")
    message = EmailMessage()
    message["From"] = "Dana Finance <dana@example.com>"
    message["To"] = "team@example.com"
    message["Subject"] = "Budget decisions and the offsite"
    message["Date"] = "Mon, 02 Jun 2025 09:30:00 +0000"
    message.set_content("Hi all,\n\n" + "\n\n".join([facts[0].text, filler(60, 1)[0], facts[1].text,
                                                      facts[2].text]) + "\n\nBest,\nDana\n")
    message.add_alternative("<html><body><p>" + "</p><p>".join(f.text for f in facts) + "</p></body></html>",
                            subtype="html")
    message.set_boundary("parley-test-boundary")  # a fixed boundary: the same bytes every time
    return bytes(message)


def notes_txt() -> bytes:
    facts = facts_for("notes.txt")
    paragraphs = [filler(70, 1)[0], facts[0].text, filler(71, 1)[0], facts[1].text + " " + facts[2].text]
    return "\n\n".join(paragraphs).encode("utf-8")


def all_documents() -> dict[str, bytes]:
    return {"handbook.pdf": handbook_pdf(), "policy.docx": policy_docx(), "wiki.html": wiki_html(),
            "runbook.md": runbook_md(), "inventory.csv": inventory_csv(), "budget.eml": budget_eml(),
            "notes.txt": notes_txt()}


def long_pdf(pages: int = 100, seed: int = 7) -> bytes:
    """A report of `pages` pages of filler prose (for the benchmark)."""
    rng = random.Random(seed)
    return make_pdf([[f"Section {n}. " + " ".join(rng.sample(FILLER, 4))] + rng.sample(FILLER, 3)
                     for n in range(1, pages + 1)], title="Annual report")


# ---- bad inputs ------------------------------------------------------------------------------

def corrupt_pdf() -> bytes:
    """A PDF header followed by garbage: no objects, no xref, no trailer."""
    rng = random.Random(3)
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(rng.randrange(256) for _ in range(4000))


def truncated_pdf() -> bytes:
    """A real PDF cut off a third of the way through."""
    data = handbook_pdf()
    return data[: len(data) // 3]


def encrypted_pdf(password: str = "s3cret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(handbook_pdf())))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def owner_only_encrypted_pdf() -> bytes:
    """Encrypted against editing only (empty user password): readable like any PDF."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(handbook_pdf())))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scanned_pdf() -> bytes:
    """Pages that hold only a picture without words (a scanned photo's soft shading): no text
    layer, and nothing OCR can read (a scan of text is read: scanned_pages_pdf)."""
    from PIL import Image
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    image = Image.blend(Image.radial_gradient("L"), Image.linear_gradient("L"), 0.4).resize((600, 800))
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=1)
    for _ in range(2):
        pdf.drawImage(ImageReader(image), 0, 0, width=A4[0], height=A4[1])
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def latin1_txt() -> bytes:
    return "Le café de la gare ouvre à 7 h. Prix réduits le lundi.".encode("latin-1")


def undecodable_txt() -> bytes:
    """Bytes no text encoding reads sensibly (seeded noise without NUL bytes)."""
    rng = random.Random(11)
    return bytes(rng.randrange(1, 256) for _ in range(3000))


def huge_single_line(words: int = 150_000) -> bytes:
    """One line of about 1 MB: prose without a single newline, with a fact in the middle."""
    rng = random.Random(9)
    vocabulary = " ".join(FILLER).replace(".", "").split()
    text = [rng.choice(vocabulary) for _ in range(words)]
    text[words // 2: words // 2] = "The secret launch code word is PELICAN-SUNRISE .".split()
    return " ".join(text).encode("utf-8")


def huge_token_line(chars: int = 400_000) -> bytes:
    """One line with no whitespace at all (a base64-like blob)."""
    rng = random.Random(11)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(rng.choice(alphabet) for _ in range(chars)).encode("ascii")


def png_image() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def lines_pdf(lines: list[str]) -> bytes:
    """A one-page text PDF with one line of text per entry, drawn as they are (reportlab canvas)."""
    import io

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    y = 800
    for line in lines:
        pdf.drawString(72, y, line)
        y -= 18
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


# ---- a typeset manual: running heads, a contents page, justified lines, printed page numbers ----

MANUAL_SECTIONS = [
    ("1.1 Joining the project", [
        "New members first read the handbook and then ask an existing member to advocate for them. "
        "The advocate writes a short message describing the work the applicant has already done.",
        "Applicants who have not yet contributed any packages are asked to start with small fixes."]),
    ("2.3 Uploading to the queue", [
        "Uploads must wait in the delayed queue for at least three days before they reach the archive. "
        "The waiting time gives the maintainer a chance to react to the change.",
        "To cancel a delayed upload, run the cancel command of the upload tool with the name of the changes file."]),
    ("3.2 Handling security bugs", [
        "Security bugs are reported privately to the security team and never in the public tracker. "
        "The team coordinates a release date with other distributions before anything is published.",
        "Fixed packages are built on the security servers and announced on the security mailing list."]),
    ("4.1 Orphaning a package", [
        "A package whose maintainer can no longer care for it is orphaned by filing a bug against the "
        "work-needing packages pseudo-package, with a short description of its state.",
        "Anyone may then adopt the orphaned package by retitling the bug and uploading a new version."]),
]
MANUAL_HEADER = "Field Manual for Volunteers, Release 3.1"


def _justified(pdf, words: list[str], x: float, y: float, width: float, size: float = 10) -> None:
    """One justified line, each word drawn on its own (no space characters between them), as
    typesetting programs do; a text extractor must place the spaces from the gaps."""
    widths = [pdf.stringWidth(w, "Helvetica", size) for w in words]
    gap = (width - sum(widths)) / max(1, len(words) - 1)
    for word, w in zip(words, widths):
        pdf.drawString(x, y, word)
        x += w + gap


def _wrap(pdf, text: str, width: float, size: float = 10) -> list[list[str]]:
    lines, line = [], []
    for word in text.split():
        if line and pdf.stringWidth(" ".join(line + [word]), "Helvetica", size) > width:
            lines.append(line)
            line = []
        line.append(word)
    return lines + [line] if line else lines


def manual_pdf(*, page_labels: bool = False) -> bytes:
    """A typeset manual: a title page, a contents page (dot leaders), then one section a page
    with a running header, a footer with the section title and the printed page number (1 on
    the third page), justified body lines. With page_labels, /PageLabels says so too (i, ii, 1…)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=1)
    pdf.setFont("Helvetica-Bold", 24)
    pdf.drawString(72, 700, "Field Manual")
    pdf.showPage()
    pdf.setFont("Helvetica-Bold", 16)
    pdf.drawString(72, 780, "Contents")
    pdf.setFont("Helvetica", 10)
    for i, (title, _) in enumerate(MANUAL_SECTIONS):
        pdf.drawString(72, 750 - 16 * i, f"{title} " + ". " * 40 + f" {i + 1}")
    pdf.showPage()
    for number, (title, paragraphs) in enumerate(MANUAL_SECTIONS, start=1):
        pdf.setFont("Helvetica", 8)
        pdf.drawString(300, 810, MANUAL_HEADER)
        pdf.setFont("Helvetica-Bold", 14)
        pdf.drawString(72, 770, title)
        pdf.setFont("Helvetica", 10)
        y = 740
        for paragraph in paragraphs:
            lines = _wrap(pdf, paragraph, 380)
            for i, words in enumerate(lines):
                if i < len(lines) - 1:
                    _justified(pdf, words, 72, y, 380)
                else:
                    pdf.drawString(72, y, " ".join(words))
                y -= 13
            y -= 10
        pdf.setFont("Helvetica", 8)
        pdf.drawString(72, 40, f"{title} {number}" if number % 2 else f"{number} Chapter {title[0]}")
        pdf.showPage()
    if page_labels:
        pdf.addPageLabel(0, "ROMAN_LOWER")
        pdf.addPageLabel(2, "ARABIC", 1)
    pdf.save()
    return out.getvalue()


# ---- a large store of unrelated, everyday text -------------------------------------------------

_WHO = ["The gardener", "Our neighbour", "The new chef", "A tourist", "The coach", "My aunt", "The librarian",
        "The bus driver", "A student", "The baker", "The painter", "The team captain", "The farmer", "A nurse",
        "The shop owner", "The pilot", "A fisherman", "The mayor", "The violinist", "A carpenter"]
_DID = ["planted", "cooked", "painted", "repaired", "photographed", "carried", "sold", "cleaned", "collected",
        "described", "borrowed", "delivered", "measured", "admired", "wrapped", "ordered", "sketched", "sorted"]
_WHAT = ["tomatoes", "a wooden chair", "the old bicycle", "fresh bread", "a blue umbrella", "the harbour boats",
         "winter coats", "apple pies", "the village map", "a kite", "river stones", "the tennis rackets",
         "paper lanterns", "a birthday cake", "the garden fence", "wild mushrooms", "the school piano", "a quilt"]
_WHEN = ["before breakfast", "on a rainy Sunday", "after the football match", "during the summer fair",
         "late in the evening", "at the weekend market", "before the holidays", "on the first warm day of spring",
         "while the soup was cooking", "after the storm", "during the autumn festival", "at dawn"]
_WHY = ["because the weather was mild", "to surprise the children", "for the neighbours", "as a favour to a friend",
        "since the shop was closed", "to raise money for the club", "for the street party", "out of habit"]


def everyday_paragraphs(count: int, seed: int = 5) -> list[str]:
    """`count` short paragraphs of everyday events, seeded: a big store that answers nothing
    technical, but is full of ordinary words (people, food, weather, places)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        out.append(" ".join(f"{rng.choice(_WHO)} {rng.choice(_DID)} {rng.choice(_WHAT)} {rng.choice(_WHEN)} "
                            f"{rng.choice(_WHY)}." for _ in range(2)))
    return out


# ---- scanned pages (OCR) -----------------------------------------------------------------------

def page_picture(lines: list[str], dpi: int = 150, points: float = 11, size: tuple[float, float] = (8.27, 11.69)):
    """A page as a scanner sees it: dark lines of text (Pillow's own font, `points` high) on a
    white picture of an A4 page at `dpi`."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("L", (round(size[0] * dpi), round(size[1] * dpi)), 255)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=round(points * dpi / 72))
    margin = round(0.8 * dpi)
    for i, line in enumerate(lines):
        draw.text((margin, margin + round(i * 1.5 * points * dpi / 72)), line, fill=25, font=font)
    return picture


def scanned_pages_pdf(pages: list[list[str]], dpi: int = 150) -> bytes:
    """A scanned PDF: one picture a page (Pillow's PDF writer), no text layer."""
    pictures = [page_picture(lines, dpi) for lines in pages]
    out = io.BytesIO()
    pictures[0].save(out, format="PDF", save_all=True, append_images=pictures[1:], resolution=dpi)
    return out.getvalue()


def prose_lines(seed: int, count: int = 12, width: int = 80) -> list[str]:
    """`count` lines of everyday prose, wrapped at `width` characters."""
    return textwrap.wrap(" ".join(everyday_paragraphs(count // 2 + 2, seed=seed)), width)[:count]


def mixed_pdf(pages: list[tuple[str, list[str]]], dpi: int = 150) -> bytes:
    """A PDF of text pages ("text", lines drawn as text) and scanned pages ("scan", a picture of
    the lines; "stamped": with a few words of text layer over it, as a scanner stamps a date), in
    the order given: what a scanner's output merged into a report looks like."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, invariant=1)
    for kind, lines in pages:
        if kind in ("scan", "stamped"):
            pdf.drawImage(ImageReader(page_picture(lines, dpi)), 0, 0, width=A4[0], height=A4[1])
            if kind == "stamped":
                pdf.setFont("Helvetica", 7)
                pdf.drawString(420, 20, "Scanned 2024-03-14 09:12")
        else:
            pdf.setFont("Helvetica", 11)
            for i, line in enumerate(lines):
                pdf.drawString(58, A4[1] - 58 - 16.5 * i, line)
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def picture_pages_pdf(pages: int, width: int = 64, height: int = 64) -> bytes:
    """A PDF written by hand whose `pages` pages all show one grey picture of width x height
    pixels (deflated, so a 10,000 x 10,000 one is a few hundred KB; a 10,000-page file a few MB)."""
    import zlib

    pixels = zlib.compress(bytes(width * height), 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (5 + i) for i in range(pages)), pages),
               b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
               b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
               % (width, height, len(pixels), pixels),
               b"<< /Length 31 >>\nstream\nq 595 0 0 842 0 0 cm /Im0 Do Q\nendstream"]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
                b"/Resources << /XObject << /Im0 3 0 R >> >> >>"] * pages
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()
