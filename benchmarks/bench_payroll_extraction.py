"""Payroll extraction speed: the whole extraction (triage, template or generic extractor) against
pdfplumber's own parse of the same pages (`page.extract_words()` on every page), same process.
The documents are the sample world's inbox (both layouts), read with and without templates."""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path

import pdfplumber

from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.templates import TemplateSet
from clay_pipelines.sample_world.payroll_docs import generate_payroll_world

ROUNDS = 3


def _bare_parse(paths: list[Path]) -> int:
    pages = 0
    for path in paths:
        with pdfplumber.open(path) as pdf:
            for page in pdf.pages:
                page.extract_words()
                pages += 1
    return pages


def run() -> None:
    root = Path(tempfile.mkdtemp(prefix="clay-bench-payroll-"))
    generate_payroll_world(root, 7, date(2026, 1, 15))
    paths = sorted((root / "inbox" / "oms.com").glob("*.pdf"))
    pages = _bare_parse(paths)  # warm-up (imports, font caches)

    started = time.perf_counter()
    for _ in range(ROUNDS):
        _bare_parse(paths)
    bare = time.perf_counter() - started

    results = {}
    for label, templates in (("templates", None), ("generic only", TemplateSet([]))):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for path in paths:
                extract_document(path, template_set=templates)
        results[label] = time.perf_counter() - started

    total_pages = pages * ROUNDS
    print(f"payroll extraction: {len(paths)} PDFs, {pages} pages, {ROUNDS} rounds")
    print(f"  pdfplumber extract_words (baseline): {total_pages / bare:>8.1f} pages/s")
    for label, seconds in results.items():
        print(
            f"  clay extraction, {label:<13}     {total_pages / seconds:>8.1f} pages/s  "
            f"ratio {seconds / bare:.2f}x the bare parse"
        )
