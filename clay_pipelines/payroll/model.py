"""What extraction produces: entries and the document they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any


@dataclass(kw_only=True)
class Entry:
    employee_name: str
    amount: Decimal
    page: int
    employee_id: str | None = None
    date: date | None = None
    currency: str | None = None
    reference: str | None = None
    extractor: str = ""  # template name, or generic:ruled / generic:words
    line_type: str | None = None  # "earning" / "deduction" on pay stubs
    low_confidence: bool = False  # read by OCR: confirmed by a person before any delivery

    def as_json(self) -> dict[str, Any]:
        return {
            "employee_name": self.employee_name,
            "employee_id": self.employee_id,
            "date": self.date.isoformat() if self.date else None,
            "amount": str(self.amount),
            "currency": self.currency,
            "reference": self.reference,
            "page": self.page,
            "extractor": self.extractor,
            **({"line_type": self.line_type} if self.line_type else {}),
            **({"confidence": "low"} if self.low_confidence else {}),
        }


@dataclass(kw_only=True)
class PrintedTotal:
    label: str
    amount: Decimal
    currency: str | None
    page: int
    kind: str = "total"  # total (the document's), group ("<name> Total", "Subtotal"), page
    start_entry: int = 0  # the entries it covers: extraction.entries[start_entry:end_entry]
    end_entry: int = 0


@dataclass(kw_only=True)
class Extraction:
    source_file: str
    pages: int
    template: str | None
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    printed_totals: list[PrintedTotal] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "source_file": self.source_file,
            "pages": self.pages,
            "template": self.template,
            "entries": [e.as_json() for e in self.entries],
            "printed_totals": [
                {"label": t.label, "amount": str(t.amount), "currency": t.currency, "page": t.page, "kind": t.kind}
                for t in self.printed_totals
            ],
            "warnings": self.warnings,
        }
