"""Checks on an extraction before anything is written. Plain functions, so tests call them directly."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from clay_pipelines.payroll.model import Extraction

PLAUSIBLE_DAYS = 62  # entries dated this far from the document's pay date are suspicious


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    detail: str


def reconcile_total(extraction: Extraction) -> CheckOutcome:
    """The extracted sum equals the document's printed total to the cent (when it prints one)."""
    total = sum((e.amount for e in extraction.entries), Decimal(0))
    finals = [t for t in extraction.printed_totals if "sub" not in t.label.lower() and "page" not in t.label.lower()]
    if not finals:
        return CheckOutcome("total_reconciles", True, True, f"no total printed; extracted {total}")
    printed = finals[-1].amount
    passed = total.quantize(Decimal("0.01")) == printed.quantize(Decimal("0.01"))
    return CheckOutcome(
        "total_reconciles",
        passed,
        True,
        f"extracted {total} {'=' if passed else '!='} printed {printed} ({finals[-1].label})",
    )


def no_duplicate_entries(extraction: Extraction) -> CheckOutcome:
    keys = Counter((e.employee_name, e.employee_id, e.date, e.amount, e.reference) for e in extraction.entries)
    duplicates = [k for k, n in keys.items() if n > 1]
    return CheckOutcome(
        "no_duplicate_entries",
        not duplicates,
        True,
        "none" if not duplicates else "; ".join(f"{k[0]} {k[3]} x{keys[k]}" for k in duplicates[:5]),
    )


def no_zero_amounts(extraction: Extraction) -> CheckOutcome:
    zeros = [e.employee_name for e in extraction.entries if e.amount == 0]
    return CheckOutcome("no_zero_amounts", not zeros, True, "none" if not zeros else ", ".join(zeros[:5]))


def dates_plausible(extraction: Extraction) -> CheckOutcome:
    dated = [e.date for e in extraction.entries if e.date]
    if not dated:
        return CheckOutcome("dates_plausible", True, False, "no dates printed")
    anchor = sorted(dated)[len(dated) // 2]
    far = [d for d in dated if abs(d - anchor) > timedelta(days=PLAUSIBLE_DAYS)]
    missing = sum(1 for e in extraction.entries if not e.date)
    passed = not far and not missing
    return CheckOutcome(
        "dates_plausible",
        passed,
        True,
        f"pay date {anchor}; {len(far)} entries more than {PLAUSIBLE_DAYS} days away; {missing} undated",
    )


def run_checks(extraction: Extraction) -> list[CheckOutcome]:
    return [
        reconcile_total(extraction),
        no_duplicate_entries(extraction),
        no_zero_amounts(extraction),
        dates_plausible(extraction),
    ]
