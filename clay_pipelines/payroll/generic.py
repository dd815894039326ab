"""The generic extractor: payment rows from layouts no template knows.

1. Find the header by its words (name, payee, apellido/nombre; amount, net pay, importe; date,
   fecha; emp no, ...) and give each column a role.
2. Read the rows under it:
   * ruled tables through pdfplumber's line strategy (cells that wrap stay one cell);
   * borderless tables from words in content-stream order, grouped into runs: text that overflows
     its column (and is clipped on the rendered page) stays with the column it starts in, so it
     never lands in the amount column.
3. Lines without an amount continue the row above (wrapped cells); total and subtotal rows are
   recorded for reconciliation, never returned as entries; a repeated header starts a new page of
   the same table; a ledger without a payee column takes the party printed above the table.
Amounts are never invented: a document whose rows carry none gives no entries and a warning.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pdfplumber

from clay_pipelines.payroll import values
from clay_pipelines.payroll.model import Entry, Extraction, PrintedTotal

WORD_X_TOLERANCE = 1.5  # pdfplumber's default 3 glues tightly kerned words ("BAIN,JMATTHEW")
# Kerning: a page whose words are set closer than WORD_X_TOLERANCE is re-read with a tolerance between
# its letter gaps and its word gaps (in font sizes: ems).
_GLUE_EVIDENCE = 3  # word gaps below WORD_X_TOLERANCE needed to call a page tightly kerned
TOTAL_LABEL = re.compile(
    r"(?i)^\s*(grand\s+|page\s+|report\s+)?(sub[\s-]?)?totals?\b|\btotal\s+(paid|disbursed|net|amount|general)\b"
    r"|\S\s+(sub[\s-]?)?totals?\s*:?\s*$"
)
# A total that closes a group of rows ("<name> Total", "Subtotal ...") rather than the document.
GROUP_TOTAL_LABEL = re.compile(r"(?i)^\s*sub[\s-]?totals?\b|\S\s+(sub[\s-]?)?totals?\s*:?\s*$")
PAGE_TOTAL_LABEL = re.compile(r"(?i)^\s*page\s+totals?\b")
NON_ENTRY_LABEL = re.compile(
    r"(?i)\b(opening|closing)\s+balance\b|\bbalance\s+(b/?f|c/?f|brought|carried)\b|brought\s+forward|carried\s+forward"
)


# ---------------------------------------------------------------------------------------------
# Header vocabulary


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-záéíóúñ#]+", values.normalise_text(text).lower())


_PAYEE_WORDS = {
    "payee",
    "beneficiary",
    "recipient",
    "contractor",
    "contractors",
    "supplier",
    "suppliers",
    "vendor",
    "consultant",
    "party",
    "employee",
    "worker",
    "nombres",
    "empresa",
    "entity",
    "beneficiario",
    "proveedor",
    "company",
}
# Words that say a column receives the money, deciding between several name-like columns (a speaker
# beside the organisation paid).
_RECEIVER_WORDS = {
    "payee",
    "paid",
    "entity",
    "empresa",
    "beneficiary",
    "beneficiario",
    "recipient",
    "vendor",
    "supplier",
    "proveedor",
}
_DESCRIPTION_WORDS = {"description", "particulars", "concept", "concepto", "details", "narration", "memo", "earnings"}
# Words that make an amount column less likely to be the payment (a rate, hours, year to date, ...).
_AMOUNT_PENALTIES = (
    ("reimbursement", 4),
    ("ytd", 9),
    ("tax", 3),
    ("deductions", 3),
    ("deduction", 3),
    ("gross", 1),
    ("rate", 5),
    ("hours", 5),
    ("cost", 3),
    ("costo", 3),
    ("requested", 3),
    ("solicitado", 3),
    ("budget", 3),
    ("calificado", 3),
)


def header_roles(text: str) -> dict[str, int]:
    """How strongly a header cell's words suggest each role."""
    words = _tokens(text)
    if not words:
        return {}
    joined = " ".join(words)
    roles = {**_payee_role(words, joined), **({} if "%" in text else _money_role(words, joined))}
    if _DESCRIPTION_WORDS & set(words):
        roles["description"] = 4
    if "currency" in words or "moneda" in words or "ccy" in words:
        roles["currency"] = 8
    if "date" in words or "fecha" in words or "dated" in words:
        roles["date"] = _date_score(set(words))
    return roles


def _payee_role(words: list[str], joined: str) -> dict[str, int]:
    """Who is paid: a surname, a given name, an employee id, or a whole name."""
    vocabulary = set(words)
    if {"apellido", "apellidos", "surname"} & vocabulary or "last name" in joined or "family name" in joined:
        return {"surname": 9}
    if (
        ("nombre" in vocabulary and "apellido" not in vocabulary)
        or "first name" in joined
        or "given name" in joined
        or "forename" in vocabulary
    ):
        return {"given": 9}
    if re.search(r"\b(emp|employee|staff|badge)\s*(no|id|number|#)\b|^(id|emp\s*#|ee\s*id)$", joined):
        return {"id": 9}
    if "name" in vocabulary or _PAYEE_WORDS & vocabulary:
        return {"name": 10 if "name" in vocabulary or "payee" in vocabulary else 8}
    return {}


def _money_role(words: list[str], joined: str) -> dict[str, int]:
    """A ledger's debit or credit, a running balance, or the amount paid."""
    if re.search(r"\b(dr|debit|debe)\b", joined) and not re.search(r"\bcr\b|credit", joined):
        return {"debit": 8}
    if re.search(r"\b(cr|credit|haber)\b", joined):
        return {"credit": 8}
    if "balance" in words or "saldo" in words:
        return {"balance": 1}
    score = _amount_score(words)
    return {"amount": score} if score > 0 else {}


def _amount_score(words: list[str]) -> int:
    vocabulary = set(words)
    if "net" in vocabulary and ({"pay", "amount", "paid"} & vocabulary or len(words) == 1):
        score = 10
    elif {"amount", "importe", "monto", "amt"} & vocabulary:
        score = 7
    elif {"payment", "paid", "pago", "awarded", "adjudicado", "granted", "otorgado"} & vocabulary:
        score = 6
    elif "total" in vocabulary or "gross" in vocabulary:
        score = 4
    elif {"value", "valor", "pay"} & vocabulary:
        score = 3
    else:
        return 0
    return score - sum(penalty for word, penalty in _AMOUNT_PENALTIES if word in vocabulary)


def _date_score(vocabulary: set[str]) -> int:
    if {"completion", "estimated", "due", "start", "end", "birth", "hire"} & vocabulary:
        return 2
    if {"pay", "payment", "signed", "incurred", "paid", "vr"} & vocabulary:
        return 9
    return 8


@dataclass(kw_only=True)
class ColumnRoles:
    """Which column index plays which role, plus the header texts for references."""

    headers: list[str]
    by_role: dict[str, int]
    notes: list[str] = field(default_factory=list)  # columns chosen by content, undecided payee columns

    def get(self, role: str) -> int | None:
        return self.by_role.get(role)

    @property
    def has_payee(self) -> bool:
        return "name" in self.by_role or "surname" in self.by_role or "given" in self.by_role

    @property
    def has_amount(self) -> bool:
        return bool({"amount", "debit", "credit"} & set(self.by_role))


def assign_roles(headers: Sequence[str], body: Sequence[Sequence[str | None]] | None = None) -> ColumnRoles | None:
    """The best column for each role, or None when the cells do not read as a payment table's header.

    With the rows under the header (`body`), what the cells look like decides what the header words
    do not: several name columns, a payee or an amount column no header word names."""
    headers = repair_split_header(headers)
    scored = [header_roles(h) for h in headers]
    numeric = sum(1 for h in headers if h and (values.find_amounts(h, False) and not _tokens(h)))
    if numeric:
        return None
    by_role: dict[str, int] = {}
    for role in ("id", "surname", "given", "name", "debit", "credit", "amount", "currency", "date", "description"):
        candidates = [(s[role], -i, i) for i, s in enumerate(scored) if role in s and i not in by_role.values()]
        if candidates:
            by_role[role] = max(candidates)[2]
    if "amount" in by_role and ("debit" in by_role or "credit" in by_role):
        del by_role["amount"]  # a ledger: the Dr/Cr pair carries the amounts
    roles = ColumnRoles(headers=list(headers), by_role=by_role)
    if body is not None:
        _roles_by_content(roles, scored, ColumnContent.of(body, len(headers)))
    if not roles.has_amount:
        return None
    if not (roles.has_payee or "description" in by_role or "date" in by_role):
        return None
    return roles


def repair_split_header(headers: Sequence[str]) -> list[str]:
    """Header cells as printed when a word overhangs a column rule: "Jurisdicc" | "ion EMPRESA" reads
    "Jurisdiccion" | "EMPRESA", and a cell's line holding only a word's last letter or two ("Jurisdiccio",
    "n") rejoins the word above it."""
    cells = [re.sub(r"(?<=[a-záéíóúñ])\n([a-záéíóúñ]{1,2})(?=\n|$)", r"\1", h or "") for h in headers]
    for i in range(1, len(cells)):
        fragment = re.match(r"([a-záéíóúñ]{1,4})(?:\s+|$)", cells[i])
        previous = cells[i - 1].rstrip()
        if fragment and re.search(r"[A-Za-zÁÉÍÓÚÑáéíóúñ]{3}$", previous) and fragment.end() < len(cells[i]):
            cells[i - 1] = previous + fragment[1]
            cells[i] = cells[i][fragment.end() :]
    return cells


# ---------------------------------------------------------------------------------------------
# Columns by content

_ORGANISATION = re.compile(
    r"(?i)(\b(inc|llc|llp|ltd|limited|plc|pllc|gmbh|ag|kg|bv|nv|sas|saic|srl|sa|s\.\s?a|s\.\s?r\.\s?l|pc|p\.\s?c|pa|"
    r"p\.\s?a|corp|corporation|co|company|hospital|institute|foundation|university|clinic|group)\.?)$"
)
_SURNAME_FIRST = re.compile(r"^[^\W\d_][^\W\d_'\-. ]*(?:[ '\-][^\W\d_]+)*,\s*[^\W\d_]+(?:[ .'\-]+[^\W\d_]*)*\.?$")


def looks_like_payee(text: str) -> bool:
    """A cell that reads as a person or an organisation: "LAST, FIRST M", capitalised name tokens,
    or a name ending in Inc/LLC/PLLC/GmbH/S.A./..."""
    text = values.normalise_text(text)
    if not text or re.search(r"\d", text) or len(text) > 80:
        return False
    if _ORGANISATION.search(text) or _SURNAME_FIRST.match(text):
        return True
    words = [w for w in re.split(r"[\s,]+", text) if w]
    capitalised = [w for w in words if w[0].isupper() and re.fullmatch(r"[^\W\d_][^\W\d_'.\-&]*", w)]
    return 2 <= len(words) <= 6 and len(capitalised) == len(words)


def looks_like_money(text: str) -> bool:
    """A cell holding one amount and nothing else (a percentage is no payment)."""
    text = values.normalise_text(text)
    return bool(text) and "%" not in text and values.looks_like_amount(values.join_stray_gaps(text, False))


@dataclass(frozen=True)
class ColumnContent:
    """Per column, the share of its filled cells (under the header) that read as a payee or as money."""

    payee: list[float]
    money: list[float]

    @staticmethod
    def of(body: Sequence[Sequence[str | None]], columns: int) -> ColumnContent:
        payee, money = [], []
        for i in range(columns):
            cells = [" ".join((row[i] or "").split()) for row in body[:60] if i < len(row)]
            filled = [c for c in cells if c] or [""]
            enough = len(filled) >= 2
            payee.append(sum(map(looks_like_payee, filled)) / len(filled) if enough else 0.0)
            money.append(sum(map(looks_like_money, filled)) / len(filled) if enough else 0.0)
        return ColumnContent(payee=payee, money=money)


def _roles_by_content(roles: ColumnRoles, scored: list[dict[str, int]], content: ColumnContent) -> None:
    """Payee and amount columns decided from what their cells look like, where the header words do not
    decide them; every column so chosen is noted for a warning that names it."""
    by_role, headers = roles.by_role, roles.headers
    label = lambda i: " ".join(headers[i].split()) or f"column {i + 1}"  # noqa: E731
    if "surname" not in by_role and "given" not in by_role:
        others = {i for r, i in by_role.items() if r != "name"}
        named = [i for i, s in enumerate(scored) if "name" in s and i not in others]
        plausible = [i for i in named if content.payee[i] >= 0.3]
        if plausible:
            receivers = [i for i in plausible if _RECEIVER_WORDS & set(_tokens(headers[i]))]
            greedy = by_role.get("name")
            chosen = receivers[0] if len(receivers) == 1 else greedy if greedy in plausible else plausible[0]
            by_role["name"] = chosen
            if len(plausible) > 1 and len(receivers) != 1:
                roles.notes.append(
                    f"several columns could be the payee ({', '.join(repr(label(i)) for i in plausible)}): "
                    f"used {label(chosen)!r}"
                )
        elif not named and "description" not in by_role and not {"debit", "credit"} & set(by_role):
            used = set(by_role.values())
            found = [(content.payee[i], -i, i) for i in range(len(headers)) if i not in used and headers[i].strip()]
            found = [f for f in found if f[0] >= 0.6]
            if found:
                by_role["name"] = max(found)[2]
                roles.notes.append(f"payee column chosen by what its cells look like: {label(by_role['name'])!r}")
    if not roles.has_amount:
        used = set(by_role.values())
        money = [i for i in range(len(headers)) if i not in used and headers[i].strip() and content.money[i] >= 0.6]
        if money:
            by_role["amount"] = money[-1]  # the rightmost money column: registers end with the sum paid
            roles.notes.append(f"amount column chosen by what its cells look like: {label(money[-1])!r}")


# ---------------------------------------------------------------------------------------------
# Document-wide conventions


@dataclass(kw_only=True)
class Conventions:
    decimal_comma: bool
    day_first: bool
    default_currency: str | None
    document_date: date | None


_DATE_LABEL = re.compile(
    r"(?i)\b(pay(?:ment)?\s*date|date\s*paid|paid\s*on|period\s*ending|fecha(?:\s*de\s*pago)?|date)\s*[:\-]?\s*"
)
_HEADER_CURRENCY = re.compile(
    r"(?i)\b(?:in|amounts?\s*in)\s+(USD|EUR|GBP|ARS|INR|GHS|JPY|CAD|AUD)\b|\((USD|EUR|GBP|ARS|INR|GHS|JPY|CAD|AUD)\)"
)


def document_conventions(
    page_texts: Sequence[str], configured_currency: str | None = None, day_first_hint: str | None = None
) -> Conventions:
    text = "\n".join(page_texts)
    decimal_comma = values.infer_decimal_comma(text.splitlines())
    day_first = values.infer_day_first(text.splitlines(), day_first_hint)
    currency = configured_currency
    if currency is None:
        match = _HEADER_CURRENCY.search(text)
        if match:
            currency = (match[1] or match[2]).upper()
    document_date = None
    for match in _DATE_LABEL.finditer(text):
        found = values.find_dates(text[match.end() : match.end() + 40].split("\n")[0], day_first)
        if found:
            document_date = found[0]
            break
    return Conventions(
        decimal_comma=decimal_comma, day_first=day_first, default_currency=currency, document_date=document_date
    )


# ---------------------------------------------------------------------------------------------
# Row assembly shared by both readers


@dataclass(kw_only=True)
class RawRow:
    cells: list[str]
    page: int
    continuation_of_previous: bool = False


@dataclass(kw_only=True)
class TableContext:
    roles: ColumnRoles
    party: str | None  # ledger party printed above a table without a payee column
    rows: list[RawRow] = field(default_factory=list)


def _cell(row: RawRow, index: int | None) -> str:
    if index is None or index >= len(row.cells):
        return ""
    return " ".join((row.cells[index] or "").split())


def _money_in(text: str, conv: Conventions, currency_cell: str = "") -> list[values.Money]:
    found = values.find_amounts(text, conv.decimal_comma, None)
    if not found:
        return []
    # Currencies printed in their own column pair with amounts line by line (one cell may hold two).
    currency_codes: list[str | None] = []
    for part in re.split(r"\n|\s{2,}", currency_cell) if currency_cell else []:
        part = part.strip()
        if part:
            key = values.normalise_text(part).upper().replace(" ", "")
            code = values.CURRENCY_SYMBOLS.get(key) or values.CURRENCY_SYMBOLS.get(key.rstrip("$") + "$")
            if code is None:
                code = next(
                    (c for s, c in values.CURRENCY_SYMBOLS.items() if c and key.startswith(s.replace(" ", ""))), None
                )
            if code is None and re.fullmatch(r"[A-Z]{3}", key):
                code = key
            currency_codes.append(code)
    money = []
    for k, m in enumerate(found):
        currency = m.currency or (currency_codes[k] if k < len(currency_codes) else None) or conv.default_currency
        money.append(values.Money(amount=m.amount, currency=currency, text=m.text))
    return money


@dataclass
class Skipped:
    """Rows read but not returned as entries, reported once per document."""

    without_amount: int = 0
    without_payee: int = 0

    def warn(self, extraction: Extraction) -> None:
        if self.without_amount and not extraction.entries:
            extraction.warnings.append(
                f"{self.without_amount} row(s) name a payee but print no amount: no entries (amounts are never invented)"
            )
        elif self.without_amount:
            extraction.warnings.append(f"{self.without_amount} row(s) without an amount were skipped")
        if self.without_payee:
            extraction.warnings.append(f"{self.without_payee} row(s) with an amount but no payee were skipped")


def build_entries(
    context: TableContext, conv: Conventions, extraction: Extraction, extractor: str, skipped: Skipped
) -> None:
    """The table's rows as entries (and printed totals), wrapped lines joined to the row they continue."""
    for note in context.roles.notes:
        if note not in extraction.warnings:
            extraction.warnings.append(note)
    for row in _merge_continuations(context.rows):
        _read_row(row, context, conv, extraction, extractor, skipped)


def _merge_continuations(rows: list[RawRow]) -> list[RawRow]:
    merged: list[RawRow] = []
    for row in rows:
        if row.continuation_of_previous and merged:
            previous = merged[-1]
            for i, text in enumerate(row.cells):
                if text and text.strip():
                    while len(previous.cells) <= i:
                        previous.cells.append("")
                    previous.cells[i] = f"{previous.cells[i]}\n{text}".strip()
        else:
            merged.append(RawRow(cells=list(row.cells), page=row.page))
    return merged


def _read_row(
    row: RawRow, context: TableContext, conv: Conventions, extraction: Extraction, extractor: str, skipped: Skipped
) -> None:
    """One row: a printed total, a line that is no payment, a skipped row, or one entry per amount."""
    roles = context.roles
    label = " ".join(c for c in row.cells if c)
    name = _payee(row, roles)
    first_text = next((c for c in row.cells if c and c.strip()), "")
    money = _row_money(row, roles, conv)
    if TOTAL_LABEL.search(name or first_text) or (not name and TOTAL_LABEL.search(label)):
        extraction.printed_totals += _printed_totals(" ".join(first_text.split()), money, row.page, extraction)
        return
    if NON_ENTRY_LABEL.search(label):
        return
    if _is_ledger(roles):
        money = [m for m in money if m.amount != 0]
    if not money:
        if name or any(c for c in row.cells):
            skipped.without_amount += 1
        return
    name, line_type = _payee_or_line(name, row, context)
    if not name:
        skipped.without_payee += 1
        return
    dates = values.find_dates(_cell(row, roles.get("date")), conv.day_first) if roles.get("date") is not None else []
    employee_id, reference = _cell(row, roles.get("id")) or None, _reference(row, roles, name)
    extraction.entries += [
        Entry(
            employee_name=" ".join(name.split()),
            amount=m.amount,
            page=row.page,
            employee_id=employee_id,
            date=dates[0] if dates else conv.document_date,
            currency=m.currency,
            reference=reference,
            extractor=extractor,
            line_type=line_type,
        )
        for m in money
    ]


def _printed_totals(label: str, money: list[values.Money], page: int, extraction: Extraction) -> list[PrintedTotal]:
    """A total row, with the entries it covers: a group total ("<name> Total", "Subtotal") the entries
    since the previous group total, a page total the page's entries, any other total every entry."""
    end = len(extraction.entries)
    if GROUP_TOTAL_LABEL.search(label):
        kind = "group"
        start = max((t.end_entry for t in extraction.printed_totals if t.kind == "group"), default=0)
    elif PAGE_TOTAL_LABEL.search(label):
        kind = "page"
        start = next((k for k, e in enumerate(extraction.entries) if e.page == page), end)
    else:
        kind, start = "total", 0
    return [
        PrintedTotal(
            label=label, amount=m.amount, currency=m.currency, page=page, kind=kind, start_entry=start, end_entry=end
        )
        for m in money
    ]


def _is_ledger(roles: ColumnRoles) -> bool:
    return "debit" in roles.by_role or "credit" in roles.by_role


def _payee(row: RawRow, roles: ColumnRoles) -> str:
    """The payee's name: the name column, or surname and given name printed in columns of their own."""
    name = _cell(row, roles.get("name"))
    if roles.get("surname") is not None or roles.get("given") is not None:
        parts = (_cell(row, roles.get("surname")), _cell(row, roles.get("given")))
        name = " ".join(p for p in parts if p) or name
    return name


def _row_money(row: RawRow, roles: ColumnRoles, conv: Conventions) -> list[values.Money]:
    """Every amount in the row's amount, debit and credit cells, with its currency."""
    currency = roles.get("currency")
    currency_cell = row.cells[currency] if currency is not None and currency < len(row.cells) else ""
    money: list[values.Money] = []
    for column in (roles.get(r) for r in ("amount", "debit", "credit")):
        if column is not None:
            raw = values.join_stray_gaps(row.cells[column] or "", conv.decimal_comma) if column < len(row.cells) else ""
            money += _money_in(raw, conv, currency_cell or "")
    return money


def _payee_or_line(name: str, row: RawRow, context: TableContext) -> tuple[str, str | None]:
    """Who a row without a payee pays: the ledger's party, or (a pay stub) its earning or deduction line."""
    if name:
        return name, None
    roles = context.roles
    if context.party and (_is_ledger(roles) or roles.get("description") is None):
        return context.party, None
    if roles.get("description") is None:
        return "", None
    line = _cell(row, roles.get("description"))
    deduction = re.search(r"(?i)tax|soc|medicare|401|insurance|deduct|fica|pension", line)
    return line, "deduction" if deduction else "earning"


def _reference(row: RawRow, roles: ColumnRoles, name: str) -> str | None:
    """The reference column, or else the description and every cell no role took, with its header."""
    if roles.get("reference") is not None:
        reference = _cell(row, roles.get("reference"))
        return reference or None
    used = set(roles.by_role.values())
    headers = roles.headers
    parts = [
        f"{' '.join(headers[i].split())}: {_cell(row, i)}"
        for i in range(len(row.cells))
        if i not in used and _cell(row, i) and i < len(headers) and headers[i]
    ]
    description = _cell(row, roles.get("description"))
    if description and description != name:
        parts.insert(0, description)
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# Ruled tables


def _is_header_repeat(cells: Sequence[str | None], headers: Sequence[str]) -> bool:
    normal = lambda t: " ".join((t or "").split()).lower()  # noqa: E731
    return [normal(c) for c in cells] == [normal(h) for h in headers]


def ruled_tables(
    page: Any,
    page_number: int,
    previous: TableContext | None,
    match_header: Callable[[list[str]], ColumnRoles | None] = assign_roles,
    table_settings: dict[str, Any] | None = None,
    x_tolerance: float = WORD_X_TOLERANCE,
) -> list[TableContext]:
    contexts: list[TableContext] = []
    settings = table_settings or {"vertical_strategy": "lines", "horizontal_strategy": "lines"}
    for table in page.find_tables(settings):
        rows = table.extract(x_tolerance=x_tolerance)
        if not rows:
            continue
        header_index = None
        roles = None
        for k, cells in enumerate(rows[:6]):
            if match_header is assign_roles:
                roles = assign_roles([c or "" for c in cells], rows[k + 1 :])
            else:
                roles = match_header([c or "" for c in cells])
            if roles:
                header_index = k
                break
        if roles is None:
            # No header on this page: a table continued from the previous page, same columns.
            if previous is not None and len(rows[0]) == len(previous.roles.headers):
                roles, header_index = previous.roles, -1
            else:
                continue
        context = TableContext(roles=roles, party=previous.party if previous else None)
        for cells in rows[header_index + 1 :]:
            texts = [c or "" for c in cells]
            if _is_header_repeat(texts, roles.headers):
                continue
            has_amount = any(
                values.find_amounts(texts[i], False)
                for i in (roles.get("amount"), roles.get("debit"), roles.get("credit"))
                if i is not None and i < len(texts)
            )
            key_cells = [roles.get("id"), roles.get("date")]
            has_key = any(texts[i].strip() for i in key_cells if i is not None and i < len(texts))
            first = texts[0].strip() if texts else ""
            continuation = not has_amount and not has_key and not (first and re.fullmatch(r"\d+", first))
            if continuation and not context.rows and previous is not None and previous.rows:
                # The row started on the previous page.
                previous.rows.append(RawRow(cells=texts, page=page_number, continuation_of_previous=True))
                continue
            context.rows.append(
                RawRow(cells=texts, page=page_number, continuation_of_previous=continuation and bool(context.rows))
            )
        contexts.append(context)
    return contexts


# ---------------------------------------------------------------------------------------------
# Borderless tables: words in content-stream order


@dataclass(kw_only=True)
class Run:
    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    chars: list[tuple[str, float, float]] = field(default_factory=list)


def page_turn(page: Any) -> int:
    """0 for upright text; 90 or 270 when most of the page's text runs down or up the page."""
    sideways = [c for c in page.chars if not c.get("upright", True) and not c["text"].isspace()]
    if len(sideways) <= len(page.chars) / 2:
        return 0
    down = sum(1 for c in sideways if c["matrix"][1] < 0)
    return 90 if down >= len(sideways) / 2 else 270


def reading_frame_chars(page: Any) -> list[dict[str, Any]]:
    """Characters with coordinates in the frame the text is read in (a sideways page turned upright)."""
    turn = page_turn(page)
    if turn == 0:
        return list(page.chars)
    turned = []
    for c in page.chars:
        if turn == 90:  # reads top to bottom; lines advance right to left
            x0, x1, top, bottom = c["top"], c["bottom"], page.width - c["x1"], page.width - c["x0"]
        else:  # reads bottom to top; lines advance left to right
            x0, x1, top, bottom = page.height - c["bottom"], page.height - c["top"], c["x0"], c["x1"]
        turned.append({**c, "x0": x0, "x1": x1, "top": top, "bottom": bottom})
    return turned


def word_tolerance(page: Any) -> float:
    """The gap (points) above which two glyphs of this page belong to different words.

    WORD_X_TOLERANCE, unless the page is tightly kerned: then its letters sit closer than usual
    (negative character spacing) and words are set apart by less than WORD_X_TOLERANCE without a space
    glyph, so at that tolerance they run together ("DOE,JMATTHEW", "PAYEENAME"). Gaps between glyphs
    on a line, in ems, fall in two clusters (letters, words); the tolerance is set halfway between."""
    gaps: list[float] = []
    sizes: list[float] = []
    previous: dict[str, Any] | None = None
    for char in page.chars:
        if char["text"].isspace():
            previous = None
            continue
        size = float(char["size"]) or 1.0
        if previous is not None and abs(char["top"] - previous["top"]) <= 1:
            gap = char["x0"] - previous["x1"]
            if -0.25 * size < gap < 0.6 * size:
                gaps.append(gap / size)
                sizes.append(size)
        previous = char
    if len(gaps) < 20:
        return WORD_X_TOLERANCE
    ordered = sorted(gaps)
    letter = ordered[len(ordered) // 2]
    size = sorted(sizes)[len(sizes) // 2]
    word_gaps = [g for g in ordered if g > letter + 0.08 and g * size <= WORD_X_TOLERANCE]
    if len(word_gaps) < max(_GLUE_EVIDENCE, len(gaps) // 100):
        return WORD_X_TOLERANCE
    word = word_gaps[len(word_gaps) // 4]
    return min(WORD_X_TOLERANCE, (letter + (word - letter) / 2) * size)


def stream_words(page: Any, x_tolerance: float = WORD_X_TOLERANCE) -> list[dict[str, Any]]:
    """Words from characters in content-stream order.

    A word ends at a space, a line change, a gap wider than WORD_X_TOLERANCE, or a glyph that steps
    back over the previous one by more than kerning ever does (a quarter of the font size): a new
    text object, such as a surname overdrawn by the next column's first letter.
    """
    words: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    width = page.height if page_turn(page) else page.width
    for char in reading_frame_chars(page):
        text = char["text"]
        if char["x0"] > width + 1 or char["x1"] < -1:
            previous = None
            continue  # outside the page: text nobody can see
        breaks = (
            current is None
            or previous is None
            or text.isspace()
            or abs(char["top"] - previous["top"]) > 2
            or char["x0"] < previous["x1"] - 0.25 * float(char["size"])
            or char["x0"] - previous["x1"] > x_tolerance
        )
        if breaks and current is not None:
            words.append(current)
            current = None
        if not text.isspace():
            if current is None:
                current = {
                    "text": text,
                    "x0": char["x0"],
                    "x1": char["x1"],
                    "top": char["top"],
                    "bottom": char["bottom"],
                    "size": char["size"],
                    "chars": [],
                }
            else:
                current["text"] += text
                current["x1"] = max(current["x1"], char["x1"])
                current["bottom"] = max(current["bottom"], char["bottom"])
            current["chars"].append((text, char["x0"], char["x1"]))
        previous = char
    if current is not None:
        words.append(current)
    return words


def word_runs(page: Any, x_tolerance: float = WORD_X_TOLERANCE) -> list[Run]:
    """Words in content-stream order joined into runs of text that flows left to right."""
    runs: list[Run] = []
    previous: dict[str, Any] | None = None
    for word in stream_words(page, x_tolerance):
        gap_limit = max(float(word["size"]) * 0.8, 4.0)
        same_line = previous is not None and abs(word["top"] - previous["top"]) <= 2.5
        continues = same_line and previous is not None and -0.5 <= word["x0"] - previous["x1"] <= gap_limit
        if continues and runs:
            run = runs[-1]
            run.text = f"{run.text} {word['text']}"
            run.x1 = max(run.x1, word["x1"])
            run.bottom = max(run.bottom, word["bottom"])
            run.chars += [(" ", previous["x1"], word["x0"]), *word["chars"]]
        else:
            runs.append(
                Run(
                    text=word["text"],
                    x0=word["x0"],
                    x1=word["x1"],
                    top=word["top"],
                    bottom=word["bottom"],
                    chars=list(word["chars"]),
                )
            )
        previous = word
    return runs


def _lines(runs: Iterable[Run]) -> list[list[Run]]:
    lines: list[list[Run]] = []
    for run in sorted(runs, key=lambda r: (round(r.top, 1), r.x0)):
        if lines and abs(lines[-1][0].top - run.top) <= 2.5:
            lines[-1].append(run)
        else:
            lines.append([run])
    return [sorted(line, key=lambda r: r.x0) for line in lines]


@dataclass(kw_only=True)
class HeaderColumns:
    spans: list[tuple[float, float]]
    roles: ColumnRoles
    bottom: float

    def column_of(self, run: Run) -> int:
        numeric = values.looks_like_amount(run.text) or bool(re.fullmatch(r"[\d.,\-\s]+", run.text))
        if numeric:
            # Numbers may be centred or right-aligned and wider than their title: nearest title centre.
            centre = (run.x0 + run.x1) / 2
            return min(range(len(self.spans)), key=lambda i: abs((self.spans[i][0] + self.spans[i][1]) / 2 - centre))
        x = run.x0 + 0.5  # text aligns left under its title
        for i, (x0, x1) in enumerate(self.spans):
            left = -1e9 if i == 0 else (self.spans[i - 1][1] + x0) / 2
            right = 1e9 if i == len(self.spans) - 1 else (x1 + self.spans[i + 1][0]) / 2
            if left <= x < right:
                return i
        return len(self.spans) - 1


def _find_header(lines: list[list[Run]]) -> tuple[int, HeaderColumns] | None:
    """The header line: the first whose words name the columns, else (headers by content) the first line
    of three or more text cells whose columns below read as a payee and an amount."""
    for index, line in enumerate(lines):
        if assign_roles([r.text for r in line]) is not None:
            return _header_at(lines, index)
    for index, line in enumerate(lines):
        if len(line) >= 3 and not any(re.search(r"\d", r.text) for r in line):
            found = _header_at(lines, index)
            if found is not None:
                return found
    return None


def _header_at(lines: list[list[Run]], index: int) -> tuple[int, HeaderColumns] | None:
    line = lines[index]
    spans = [(r.x0, r.x1) for r in line]
    texts = [r.text for r in line]
    first_line = list(texts)
    bottom = max(r.bottom for r in line)
    columns = HeaderColumns(spans=spans, roles=ColumnRoles(headers=texts, by_role={}), bottom=bottom)
    # A second header line (words under the first, no numbers) completes the column titles.
    if index + 1 < len(lines):
        below = lines[index + 1]
        if below[0].top - bottom < 6 and not any(values.find_amounts(r.text, False) for r in below):
            for r in below:
                k = columns.column_of(r)
                texts[k] = f"{texts[k]} {r.text}"
            bottom = max(bottom, max(r.bottom for r in below))
    body = []
    for later in lines[index + 1 : index + 61]:
        cells = [""] * len(spans)
        for run in later:
            k = columns.column_of(run)
            cells[k] = f"{cells[k]} {run.text}".strip()
        body.append(cells)
    # The line below may be no header at all (a panel's title beside the table): then the first line alone.
    roles = assign_roles(texts, body) or assign_roles(first_line, body)
    if roles is None:
        return None
    return index, HeaderColumns(spans=spans, roles=roles, bottom=bottom)


def _split_amounts_printed_over_text(
    body: list[list[Run]], columns: HeaderColumns, amount_columns: set[int | None]
) -> list[list[Run]]:
    """Text overflowing under an amount column can fuse with the amount printed over it
    ("...dated 29.01.2016" + "1074935"). Amounts in a column share its right edge; a text run that
    ends exactly there with digits is split where its trailing digits step back over a glyph."""
    edges: dict[int, list[float]] = {}
    for line in body:
        for run in line:
            k = columns.column_of(run)
            if k in amount_columns and values.looks_like_amount(run.text):
                edges.setdefault(k, []).append(run.x1)
    right_edges = [sorted(v)[len(v) // 2] for v in edges.values() if len(v) >= 2]
    result: list[list[Run]] = []
    for line in body:
        new_line: list[Run] = []
        for run in line:
            split = None
            if columns.column_of(run) not in amount_columns and any(abs(run.x1 - e) <= 1.5 for e in right_edges):
                k = len(run.chars)
                while k > 0 and run.chars[k - 1][0].isdigit():
                    k -= 1
                for i in range(len(run.chars) - 1, k, -1):
                    if run.chars[i][1] < run.chars[i - 1][2] - 0.3:
                        split = i
                        break
            if split is None:
                new_line.append(run)
                continue
            head, tail = run.chars[:split], run.chars[split:]
            head_text = "".join(c[0] for c in head).strip()
            new_line.append(Run(text=head_text, x0=run.x0, x1=head[-1][2], top=run.top, bottom=run.bottom, chars=head))
            tail_text = "".join(c[0] for c in tail)
            new_line.append(Run(text=tail_text, x0=tail[0][1], x1=run.x1, top=run.top, bottom=run.bottom, chars=tail))
        result.append(new_line)
    return result


def _party_above(lines: list[list[Run]], header_index: int) -> str | None:
    for line in reversed(lines[max(0, header_index - 4) : header_index]):
        text = " ".join(r.text for r in line).strip()
        if re.search(r"[A-Za-z]{2}", text) and not values.find_dates(text, False):
            return text
    return None


def borderless_table(
    page: Any, page_number: int, previous: TableContext | None, x_tolerance: float = WORD_X_TOLERANCE
) -> TableContext | None:
    lines = _lines(word_runs(page, x_tolerance))
    found = _find_header(lines)
    if found is None:
        if previous is None or not hasattr(previous, "columns"):
            return None
        header_index, columns = -1, previous.columns  # type: ignore[attr-defined]
    else:
        header_index, columns = found
    roles = columns.roles
    context = TableContext(roles=roles, party=None if roles.has_payee else _party_above(lines, max(header_index, 0)))
    context.columns = columns  # type: ignore[attr-defined]
    amount_columns = {roles.get(r) for r in ("amount", "debit", "credit")} - {None}
    date_column = roles.get("date")
    body = [line for line in lines[header_index + 1 :] if line[0].top > columns.bottom]
    body = _split_amounts_printed_over_text(body, columns, amount_columns)
    gaps = [b[0].top - a[0].top for a, b in itertools.pairwise(body)]
    typical_gap = sorted(gaps)[len(gaps) // 2] if gaps else 12.0
    last_top: float | None = None
    anchored_seen = False  # until a row prints an amount or a date, lines are rows, not continuations
    for line in body:
        cells = [""] * len(columns.spans)
        for run in line:
            k = columns.column_of(run)
            cells[k] = f"{cells[k]} {run.text}".strip()
        anchored = any(values.find_amounts(cells[k], False) for k in amount_columns) or (
            date_column is not None and values.find_dates(cells[date_column], True)
        )
        far = last_top is not None and line[0].top - last_top > 2.5 * typical_gap
        if anchored:
            anchored_seen = True
            context.rows.append(RawRow(cells=cells, page=page_number))
        elif anchored_seen and context.rows and not far and not TOTAL_LABEL.search(" ".join(cells)):
            context.rows.append(RawRow(cells=cells, page=page_number, continuation_of_previous=True))
        elif TOTAL_LABEL.search(" ".join(cells)) or not anchored_seen:
            # A total, or a first row with no amount (reported, never turned into an entry).
            context.rows.append(RawRow(cells=cells, page=page_number))
        last_top = line[0].top
    _centred_payees(context)
    return context


def _centred_payees(context: TableContext) -> None:
    """A payee cell centred on its row's numbers prints half its lines above them and half below: a row
    whose number line has no payee takes the text-only line just above it (read as a continuation of the
    row before) as the start of its payee; the lines below continue it as usual."""
    column = context.roles.get("name")
    if column is None:
        return
    rows = context.rows
    for j in range(1, len(rows)):
        row, above = rows[j], rows[j - 1]
        if row.continuation_of_previous or _cell(row, column) or not _cell(above, column):
            continue
        others = [c for i, c in enumerate(above.cells) if i != column and c.strip()]
        if others or (j >= 2 and not above.continuation_of_previous):
            continue
        row.cells[column], above.cells[column] = above.cells[column], ""


# ---------------------------------------------------------------------------------------------


_DAY_FIRST_WORDS = re.compile(r"(?i)\b(dd/mm|fecha|importe|apellido|nombre|datum|betrag|montant|valor|data|£|€)|[£€]")


def _day_first_hint(text: str) -> str | None:
    """Day-first unless the document reads American: decimal commas, pounds, euros, Spanish, German..."""
    if re.search(r"(?i)\bmm/dd", text):
        return "m"
    if _DAY_FIRST_WORDS.search(text) or values.infer_decimal_comma(text.splitlines()):
        return "d"
    return None


def extract_generic(pdf: pdfplumber.PDF, source_file: str, configured_currency: str | None = None) -> Extraction:
    extraction = Extraction(source_file=source_file, pages=len(pdf.pages), template=None)
    tolerances = [word_tolerance(page) for page in pdf.pages]
    page_texts = [page.extract_text(x_tolerance=t) or "" for page, t in zip(pdf.pages, tolerances, strict=True)]
    header_hint = _day_first_hint("\n".join(page_texts))
    conv = document_conventions(page_texts, configured_currency, header_hint)
    previous_ruled: TableContext | None = None
    previous_words: TableContext | None = None
    contexts: list[tuple[TableContext, str]] = []
    for number, page in enumerate(pdf.pages, start=1):
        # Ruled cells are read by pdfplumber in page coordinates: only for upright text.
        tolerance = tolerances[number - 1]
        ruled = ruled_tables(page, number, previous_ruled, x_tolerance=tolerance) if page_turn(page) == 0 else []
        if ruled:
            contexts += [(c, "generic:ruled") for c in ruled]
            previous_ruled = ruled[-1]
            continue
        borderless = borderless_table(page, number, previous_words, tolerance)
        if borderless is not None:
            contexts.append((borderless, "generic:words"))
            previous_words = borderless
    if not contexts:
        extraction.warnings.append("no payment table found: no header names a payee and an amount column")
        return extraction
    skipped = Skipped()
    for context, extractor in contexts:
        build_entries(context, conv, extraction, extractor, skipped)
    skipped.warn(extraction)
    if any(e.line_type for e in extraction.entries):
        extraction.warnings.append(
            "no payee column: this looks like a pay stub; entries are its earning and deduction lines, "
            "labelled by their description"
        )
    return extraction
