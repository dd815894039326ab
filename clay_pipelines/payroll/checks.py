"""Checks on an extraction before anything is written. Plain functions, so tests call them directly.

Each check's name and description live here, beside the function that decides it; the asset declares
its check specs from CHECKS, so the UI shows what the code checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from clay_pipelines.payroll.model import Extraction

PLAUSIBLE_DAYS = 62  # entries dated this far from the document's pay date are suspicious


@dataclass(frozen=True, kw_only=True)
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
        return CheckOutcome(
            name="total_reconciles", passed=True, blocking=True, detail=f"no total printed; extracted {total}"
        )
    printed = finals[-1].amount
    passed = total.quantize(Decimal("0.01")) == printed.quantize(Decimal("0.01"))
    return CheckOutcome(
        name="total_reconciles",
        passed=passed,
        blocking=True,
        detail=f"extracted {total} {'=' if passed else '!='} printed {printed} ({finals[-1].label})",
    )


def no_duplicate_entries(extraction: Extraction) -> CheckOutcome:
    keys = Counter((e.employee_name, e.employee_id, e.date, e.amount, e.reference) for e in extraction.entries)
    duplicates = [k for k, n in keys.items() if n > 1]
    return CheckOutcome(
        name="no_duplicate_entries",
        passed=not duplicates,
        blocking=True,
        detail="none" if not duplicates else "; ".join(f"{k[0]} {k[3]} x{keys[k]}" for k in duplicates[:5]),
    )


def no_zero_amounts(extraction: Extraction) -> CheckOutcome:
    zeros = [e.employee_name for e in extraction.entries if e.amount == 0]
    return CheckOutcome(
        name="no_zero_amounts", passed=not zeros, blocking=True, detail="none" if not zeros else ", ".join(zeros[:5])
    )


def dates_plausible(extraction: Extraction) -> CheckOutcome:
    dated = [e.date for e in extraction.entries if e.date]
    if not dated:
        return CheckOutcome(name="dates_plausible", passed=True, blocking=False, detail="no dates printed")
    anchor = sorted(dated)[len(dated) // 2]
    far = [d for d in dated if abs(d - anchor) > timedelta(days=PLAUSIBLE_DAYS)]
    missing = sum(1 for e in extraction.entries if not e.date)
    return CheckOutcome(
        name="dates_plausible",
        passed=not far and not missing,
        blocking=True,
        detail=f"pay date {anchor}; {len(far)} entries more than {PLAUSIBLE_DAYS} days away; {missing} undated",
    )


@dataclass(frozen=True, kw_only=True)
class Check:
    """A check as the pipeline declares it: its name, what it asserts, and the function that decides it."""

    name: str
    description: str
    run: Callable[[Extraction], CheckOutcome]


CHECKS = [
    Check(
        name="total_reconciles",
        description="The extracted entries add up to the document's printed total, to the cent (when it prints one).",
        run=reconcile_total,
    ),
    Check(
        name="no_duplicate_entries",
        description="No two entries have the same payee, employee id, date, amount and reference.",
        run=no_duplicate_entries,
    ),
    Check(
        name="no_zero_amounts",
        description="No entry has an amount of zero.",
        run=no_zero_amounts,
    ),
    Check(
        name="dates_plausible",
        description=f"Entries are dated within {PLAUSIBLE_DAYS} days of the document's pay date (their median date), and "
        "none is undated when others are dated.",
        run=dates_plausible,
    ),
]


def run_checks(extraction: Extraction) -> list[CheckOutcome]:
    return [check.run(extraction) for check in CHECKS]
