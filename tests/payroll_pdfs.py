"""PDFs built for the tests: each exercises one thing real registers do."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pypdfium2
from fpdf import FPDF
from fpdf.enums import TableBordersLayout

FIXED = datetime(2026, 1, 1, tzinfo=UTC)


def _pdf(orientation: str = "P") -> FPDF:
    pdf = FPDF(orientation=orientation, unit="mm", format="A4")
    pdf.set_creation_date(FIXED)
    pdf.set_auto_page_break(auto=True, margin=15)
    return pdf


def ruled_register(
    path: Path,
    rows: Sequence[Sequence[str]],
    header: Sequence[str],
    title: str,
    footer_rows: Sequence[Sequence[str]] = (),
    widths: Sequence[int] | None = None,
    font_size: int = 8,
) -> Path:
    """A fully ruled table; fpdf2 wraps long cells and repeats the header on every page."""
    pdf = _pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=font_size)
    with pdf.table(
        col_widths=widths, borders_layout=TableBordersLayout.ALL, line_height=5, first_row_as_headings=True
    ) as table:
        for data in [header, *rows, *footer_rows]:
            row = table.row()
            for value in data:
                row.cell(value)
    pdf.output(str(path))
    return path


def borderless_register(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    columns_x: Sequence[float],
    right_aligned: Sequence[int] = (),
    title: str = "",
    font_size: int = 8,
    extra_lines: Sequence[str] = (),
) -> Path:
    """Words placed at column positions, no ruling at all."""
    pdf = _pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", size=font_size)
    y = 15.0
    for line in ([title] if title else []) + list(extra_lines):
        pdf.text(15, y, line)
        y += 6
    y += 4

    def put(values: Sequence[str], top: float) -> None:
        for k, (value, x) in enumerate(zip(values, columns_x, strict=True)):
            if k in right_aligned:
                pdf.text(x + 25 - pdf.get_string_width(value), top, value)
            else:
                pdf.text(x, top, value)

    put(header, y)
    for row in rows:
        y += 5
        put(row, y)
    pdf.output(str(path))
    return path


def rotate_pages(path: Path, degrees: int) -> Path:
    document = pypdfium2.PdfDocument(str(path))
    for page in document:
        page.set_rotation(degrees)
    rotated = path.with_name(path.stem + f"-rotated{degrees}.pdf")
    document.save(str(rotated))
    document.close()
    return rotated


def encrypted(path: Path, user_password: str) -> Path:
    pdf = _pdf()
    pdf.set_encryption(owner_password="owner-secret", user_password=user_password)
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.cell(0, 10, "Employee Name    Net Pay", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def scanned(path: Path) -> Path:
    """An image and nothing else: what a scanner produces."""
    from PIL import Image

    image_path = path.with_suffix(".png")
    Image.new("RGB", (400, 300), (250, 250, 250)).save(image_path)
    pdf = _pdf()
    pdf.add_page()
    pdf.image(str(image_path), x=10, y=10, w=180)
    pdf.output(str(path))
    return path


def pay_stub(path: Path) -> Path:
    pdf = _pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 11)
    pdf.text(15, 15, "Acme Payroll Services")
    pdf.set_font("Helvetica", size=9)
    pdf.text(15, 22, "Advice Number: 1234 | Date: 03/31/2026")
    left = [("Description", "Value"), ("REGULAR", "4,000.00"), ("Fed Income Tax", "600.00"), ("Medicare", "58.00")]
    right = [("YTD TAXES", ""), ("Fed Income Tax YTD", "1,800.00"), ("Medicare YTD", "174.00")]
    for k, (label, value) in enumerate(left):
        pdf.text(15, 32 + k * 7, label)
        pdf.text(75 - pdf.get_string_width(value), 32 + k * 7, value)
    for k, (label, value) in enumerate(right):
        pdf.text(110, 35 + k * 7, label)
        pdf.text(180 - pdf.get_string_width(value), 35 + k * 7, value)
    pdf.output(str(path))
    return path
