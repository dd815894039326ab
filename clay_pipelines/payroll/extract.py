"""Extraction of one payroll PDF: triage, then a template when one recognises the layout, else the
generic extractor. Touches no database."""

from __future__ import annotations

import warnings
from pathlib import Path

import pdfplumber
from pdfminer.pdfdocument import PDFPasswordIncorrect

from clay_pipelines.payroll import ocr, templates
from clay_pipelines.payroll.generic import extract_generic
from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.triage import UnreadableDocument, triage


def extract_document(
    path: Path,
    password: str | None = None,
    configured_currency: str | None = None,
    template_set: templates.TemplateSet | None = None,
) -> Extraction:
    """Entries of one PDF; UnreadableDocument (naming the file and the reason) when it cannot be read."""
    try:
        triage(path, password)
    except UnreadableDocument as error:
        if error.reason != "no_text_layer":
            raise
        return _scan(path, password, configured_currency, error)
    template_set = template_set if template_set is not None else templates.default_templates()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pdf = pdfplumber.open(path, password=password or "")
    except PDFPasswordIncorrect as error:
        raise UnreadableDocument(path, "encrypted", "encrypted: a password is needed") from error
    except Exception as error:  # pdfminer raises many kinds on damaged files
        raise UnreadableDocument(
            path, "corrupt", f"corrupt or unreadable PDF ({type(error).__name__}: {error})"
        ) from error
    with pdf:
        template = template_set.match(pdf)
        if template is not None:
            extraction = template.extract(pdf, path.name)
        else:
            extraction = extract_generic(pdf, path.name, configured_currency)
    if not extraction.entries and not extraction.warnings:
        extraction.warnings.append("no entries found")
    return extraction


def _scan(path: Path, password: str | None, currency: str | None, error: UnreadableDocument) -> Extraction:
    """A document without a text layer: OCR when tesseract is installed, else unreadable naming the tool."""
    if not ocr.available():
        raise UnreadableDocument(path, "no_text_layer", f"{error.detail}; {ocr.INSTALL_HINT}") from error
    extraction = ocr.extract_scan(path, password, currency)
    if not extraction.entries:
        raise UnreadableDocument(
            path,
            "no_text_layer",
            f"{error.detail}; OCR found no payment table in it ({'; '.join(extraction.warnings[1:])})",
        ) from error
    return extraction
