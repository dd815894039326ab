"""Registers made for the tests, one per trait of real registers the generic extractor must read:
tight kerning, columns named by role, subtotal rows, cells centred on their row, header words
overhanging a column rule, gaps inside numbers, scans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF

from tests.payroll_pdfs import FIXED


def _pdf() -> FPDF:
    pdf = FPDF(orientation="P", unit="pt", format="A4")
    pdf.set_creation_date(FIXED)
    pdf.set_auto_page_break(auto=False)
    pdf.add_page()
    pdf.set_font("Helvetica", size=9)
    return pdf


def _kerned(pdf: FPDF, x: float, y: float, text: str, word_gap: float) -> None:
    """Each word on its own, letters pulled together (negative character spacing) and words set
    `word_gap` points apart with no space glyph between them, as tightly kerned registers print."""
    for word in text.split(" "):
        pdf.text(x, y, word)
        x += pdf.get_string_width(word) + word_gap


def kerned_register(path: Path, rows: Sequence[Sequence[str]], char_spacing: float = -0.4) -> Path:
    """PAYEE NAME | EMPLOYEE ID | AMOUNT ($), every word kerned so tightly that at pdfplumber's
    default tolerance (and at 1.5 points) they run together: "PAYEENAME", "DOE,JMATTHEW"."""
    pdf = _pdf()
    pdf.set_char_spacing(char_spacing)
    columns = (40.0, 250.0, 400.0)
    y = 60.0
    for text, x in zip(("PAYEE NAME", "EMPLOYEE ID", "AMOUNT ($)"), columns, strict=True):
        _kerned(pdf, x, y, text, 1.0)
    for row in rows:
        y += 14
        for text, x in zip(row, columns, strict=True):
            _kerned(pdf, x, y, text, 1.0)
    pdf.output(str(path))
    return path


def grid_register(
    path: Path,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    header_overhang: dict[int, str] | None = None,
    bold_rows: Sequence[int] = (),
) -> Path:
    """A ruled grid drawn line by line, each cell's text at its left edge. `header_overhang` prints a
    header text from column k's left edge on, running across the rule into column k+1 (the cell's
    own text is then the part after the rule)."""
    pdf = _pdf()
    x0, y0, height = 30.0, 50.0, 16.0
    edges = [x0]
    for width in widths:
        edges.append(edges[-1] + width)
    all_rows = [list(header), *[list(r) for r in rows]]
    for r, cells in enumerate(all_rows):
        top = y0 + r * height
        pdf.set_font("Helvetica", "B" if r in bold_rows or r == 0 else "", 8)
        for k, text in enumerate(cells):
            if r == 0 and header_overhang and k in header_overhang:
                text = header_overhang[k]
            lines = text.split("\n")
            left = edges[k] + 2
            if r == 0 and header_overhang and k - 1 in header_overhang:  # after the text overhanging into it
                left = max(left, edges[k - 1] + 2 + pdf.get_string_width(header_overhang[k - 1]) + 3)
            for n, line in enumerate(lines):
                pdf.text(left, top + 7 + n * 8 - (len(lines) - 1) * 4 + (2 if len(lines) == 1 else 0), line)
    pdf.set_line_width(0.5)
    bottom = y0 + len(all_rows) * height
    for x in edges:
        pdf.line(x, y0, x, bottom)
    for r in range(len(all_rows) + 1):
        pdf.line(edges[0], y0 + r * height, edges[-1], y0 + r * height)
    pdf.output(str(path))
    return path


def borderless_rows(
    path: Path,
    lines: Sequence[tuple[float, Sequence[tuple[float, str]]]],
    right_edges: dict[float, float] | None = None,
) -> Path:
    """Text placed line by line: each line is (baseline y, [(x, text), ...]); a text whose x is a key
    of `right_edges` is right-aligned on that edge."""
    pdf = _pdf()
    for y, cells in lines:
        for x, text in cells:
            if right_edges and x in right_edges:
                pdf.text(right_edges[x] - pdf.get_string_width(text), y, text)
            else:
                pdf.text(x, y, text)
    pdf.output(str(path))
    return path


def scan_of(source: Path, path: Path, dpi: int = 200) -> Path:
    """A scan of `source`: each page rendered to an image, and a PDF of those images with no text."""
    import pypdfium2

    document = pypdfium2.PdfDocument(str(source))
    pdf = FPDF(unit="pt", format="A4")
    pdf.set_creation_date(FIXED)
    for index in range(len(document)):
        image = document[index].render(scale=dpi / 72).to_pil().convert("L")
        image_path = path.with_name(f"{path.stem}-{index}.png")
        image.save(image_path)
        pdf.add_page()
        pdf.image(str(image_path), x=0, y=0, w=pdf.w, h=pdf.h)
    document.close()
    pdf.output(str(path))
    return path
