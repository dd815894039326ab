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
    _development_files()


# ---------------------------------------------------------------------------------------------
# The development registers beside the project (../shared/data/payroll-pdfs), when that folder exists:
# the F1 of each with its scorer, and the generic path's time against pdfplumber's bare parse.

DEVELOPMENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "payroll-pdfs"
SCORER = DEVELOPMENT.parents[1] / "tools" / "score_payroll_extraction.py"


def _development_files() -> None:
    if not DEVELOPMENT.is_dir() or not SCORER.is_file():
        print(f"  (no development registers at {DEVELOPMENT}: F1 not measured)")
        return
    import json
    import subprocess
    import sys

    from clay_pipelines.payroll import generic
    from clay_pipelines.payroll.triage import UnreadableDocument

    readable: list[Path] = []
    print(f"development registers ({DEVELOPMENT}):")
    with tempfile.TemporaryDirectory() as scratch:
        for path in sorted(DEVELOPMENT.glob("*.pdf")):
            try:
                extraction = extract_document(path)
            except UnreadableDocument as error:
                print(f"  {path.stem:<42} unreadable ({error.reason})")
                continue
            readable.append(path)
            out = Path(scratch) / f"{path.stem}.json"
            out.write_text(json.dumps(extraction.as_json()))
            truth = DEVELOPMENT / "truth" / f"{path.stem}.json"
            scored = subprocess.run(
                [sys.executable, str(SCORER), str(truth), str(out)], capture_output=True, text=True, check=False
            )
            print(f"  {path.stem:<42} {scored.stdout.strip().splitlines()[-1]}")
    pages = _bare_parse(readable)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        _bare_parse(readable)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for path in readable:
            extract_document(path, template_set=TemplateSet([]))
    ours = time.perf_counter() - started
    opened = [pdfplumber.open(path) for path in readable]
    parsed = [page for pdf in opened for page in pdf.pages if page.chars]  # characters parsed beforehand
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for page in parsed:
            generic.word_tolerance(page)
    kerning = time.perf_counter() - started
    for pdf in opened:
        pdf.close()
    print(f"  generic path, {len(readable)} PDFs, {pages} pages: ratio {ours / bare:.2f}x the bare parse")
    print(f"  of which the kerning check (word_tolerance on every page): {kerning / bare:.3f}x the bare parse")
