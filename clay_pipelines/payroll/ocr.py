"""Scans: pages without a text layer read by tesseract (through pytesseract), then by the generic
extractor as if the words had been printed where tesseract saw them.

Every entry read this way is low-confidence: it goes to the review queue and is never delivered
before a person confirms it. Without tesseract a scan stays unreadable, the reason naming the tool.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pypdfium2

from clay_pipelines.payroll.generic import extract_generic
from clay_pipelines.payroll.model import Extraction

DPI = 300
INSTALL_HINT = "install tesseract (Debian: apt-get install tesseract-ocr)"


def available() -> bool:
    return shutil.which("tesseract") is not None


@dataclass
class OcrPage:
    """The little of pdfplumber's Page the generic extractor reads: characters, size, no ruled tables."""

    width: float
    height: float
    chars: list[dict[str, Any]] = field(default_factory=list)

    def find_tables(self, settings: dict[str, Any] | None = None) -> list[Any]:
        return []  # rules in a scan are pixels: its tables are read from word positions

    def extract_text(self, x_tolerance: float = 0) -> str:
        lines: dict[int, list[dict[str, Any]]] = {}
        for char in self.chars:
            lines.setdefault(round(char["top"] / 4), []).append(char)
        return "\n".join(
            "".join(c["text"] for c in sorted(line, key=lambda c: c["x0"])) for _, line in sorted(lines.items())
        )


@dataclass
class OcrDocument:
    pages: list[OcrPage]


def _page_from_words(data: dict[str, list[Any]], width: float, height: float, scale: float) -> OcrPage:
    """Each recognised word as characters spread over its box (points), a space glyph after it."""
    page = OcrPage(width=width, height=height)
    for k, text in enumerate(data["text"]):
        text = (text or "").strip()
        if not text or float(data["conf"][k]) < 0 or not any(ch.isalnum() for ch in text):
            continue
        x0, top = data["left"][k] * scale, data["top"][k] * scale
        w, h = data["width"][k] * scale, data["height"][k] * scale
        step = w / len(text)
        for i, ch in enumerate(text):
            page.chars.append(_char(ch, x0 + i * step, x0 + (i + 1) * step, top, top + h))
        page.chars.append(_char(" ", x0 + w, x0 + w + step / 2, top, top + h))
    return page


def _char(text: str, x0: float, x1: float, top: float, bottom: float) -> dict[str, Any]:
    # The line's words share a baseline in print but not in boxes: the top of a word is its line's
    # position to the nearest half point, enough for the extractor's same-line tolerance.
    return {
        "text": text,
        "x0": x0,
        "x1": x1,
        "top": top,
        "bottom": bottom,
        "size": max(bottom - top, 1.0),
        "upright": True,
        "matrix": (1, 0, 0, 1, 0, 0),
    }


def _without_rules(image: Any) -> Any:
    """The page without its table rules: tesseract reads ruled cells badly (a rule becomes '|' or eats
    the letters beside it). A rule is a run of dark pixels at least half an inch long."""
    import numpy as np
    from PIL import Image

    pixels = np.array(image)
    dark = pixels < 160
    rules = _long_runs(dark, DPI // 2) | _long_runs(dark.T, DPI // 2).T
    # Antialiased edges of a rule: the rows and columns next to it go too.
    rules = rules | np.roll(rules, 1, 0) | np.roll(rules, -1, 0) | np.roll(rules, 1, 1) | np.roll(rules, -1, 1)
    pixels[rules] = 255
    return Image.fromarray(pixels)


def _long_runs(mask: Any, length: int) -> Any:
    import numpy as np

    out = np.zeros_like(mask)
    for i in np.where(mask.sum(axis=1) >= length)[0]:
        edges = np.diff(np.concatenate(([0], mask[i].astype(np.int8), [0])))
        for start, end in zip(np.where(edges == 1)[0], np.where(edges == -1)[0], strict=True):
            if end - start >= length:
                out[i, start:end] = True
    return out


def ocr_document(path: Path, password: str | None = None) -> OcrDocument:
    import pytesseract

    document = pypdfium2.PdfDocument(str(path), password=password)
    try:
        pages = []
        for index in range(len(document)):
            page = document[index]
            width, height = page.get_size()
            image = _without_rules(page.render(scale=DPI / 72).to_pil().convert("L"))
            # Sparse text: a register's cells are islands of words, not paragraphs.
            data = pytesseract.image_to_data(image, config="--psm 11", output_type=pytesseract.Output.DICT)
            pages.append(_page_from_words(data, width, height, 72 / DPI))
        return OcrDocument(pages=pages)
    finally:
        document.close()


def extract_scan(path: Path, password: str | None, configured_currency: str | None) -> Extraction:
    """The scan's entries, every one low-confidence."""
    document = ocr_document(path, password)
    extraction = extract_generic(document, path.name, configured_currency)  # type: ignore[arg-type]
    for entry in extraction.entries:
        entry.low_confidence = True
        entry.extractor = f"ocr+{entry.extractor}"
    extraction.warnings.insert(
        0, "read by OCR (no text layer): every entry is low-confidence and waits for a person to confirm it"
    )
    return extraction
