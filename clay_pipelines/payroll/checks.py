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

from clay_pipelines.payroll.model import Extraction, PrintedTotal

PLAUSIBLE_DAYS = 62  # entries dated this far from the document's pay date are suspicious


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    detail: str


def reconcile_total(extraction: Extraction) -> CheckOutcome:
    """The extracted sum equals the document's printed total to the cent (when it prints one), and each
    group's entries equal the group total printed under them ("<name> Total", "Subtotal")."""
    total = sum((e.amount for e in extraction.entries), Decimal(0))
    finals = [
        t
        for t in extraction.printed_totals
        if t.kind == "total" and "sub" not in t.label.lower() and "page" not in t.label.lower()
    ]
    groups = [t for t in extraction.printed_totals if t.kind == "group"]
    wrong_groups = [t for t in groups if _cents(_covered(extraction, t)) != _cents(t.amount)]
    group_detail = ""
    if groups:
        group_detail = f"; {len(groups) - len(wrong_groups)} of {len(groups)} group totals reconcile"
        group_detail += "".join(
            f"; {t.label}: extracted {_covered(extraction, t)} != printed {t.amount}" for t in wrong_groups[:5]
        )
    if not finals:
        return CheckOutcome(
            name="total_reconciles",
            passed=not wrong_groups,
            blocking=True,
            detail=f"no total printed; extracted {total}{group_detail}",
        )
    printed = finals[-1].amount
    passed = _cents(total) == _cents(printed) and not wrong_groups
    return CheckOutcome(
        name="total_reconciles",
        passed=passed,
        blocking=True,
        detail=f"extracted {total} {'=' if _cents(total) == _cents(printed) else '!='} printed {printed} "
        f"({finals[-1].label}){group_detail}",
    )


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))


def _covered(extraction: Extraction, total: PrintedTotal) -> Decimal:
    return sum((e.amount for e in extraction.entries[total.start_entry : total.end_entry]), Decimal(0))


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
        description="The extracted entries add up to the document's printed total, to the cent (when it prints one), "
        "and each printed group total ('<name> Total', 'Subtotal') to the entries of its group.",
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
