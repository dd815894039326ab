"""Reading amounts, dates and currencies the way payment registers print them.

Amounts become Decimal, never float: 1,234.56  1.234,56  $ 10.000,00  -£65.00  (65.00)  26406576
34,594,76 (a comma before the cents). Dates: dd/mm/yyyy, mm/dd/yyyy, 13-May-16, 13\u2010Sep\u201011 (Unicode
hyphens), 20 Oct 2026, 23rd July 2013, ISO. Which of day or month comes first is decided once per
document from all its dates, not guessed per value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

# Hyphen-like characters printed in dates and amounts (U+2010 hyphen, U+2011, U+2012, U+2013, U+2212 minus).
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-"})

CURRENCY_SYMBOLS: dict[str, str | None] = {
    "US$": "USD",
    "US $": "USD",
    "USD": "USD",
    "$": None,  # a bare $ is ambiguous: configured or unknown
    "£": "GBP",
    "GBP": "GBP",
    "€": "EUR",
    "EUR": "EUR",
    "¥": "JPY",
    "JPY": "JPY",
    "¥JAPAN": "JPY",
    "GHS": "GHS",
    "GH₵": "GHS",
    "GHȻ": "GHS",
    "GH¢": "GHS",
    "ARS": "ARS",
    "INR": "INR",
    "₹": "INR",
    "CAD": "CAD",
    "C$": "CAD",
    "AUD": "AUD",
    "A$": "AUD",
    "CHF": "CHF",
    "MXN": "MXN",
    "BRL": "BRL",
    "R$": "BRL",
}
_CURRENCY_PATTERN = "|".join(re.escape(s) for s in sorted(CURRENCY_SYMBOLS, key=len, reverse=True))
AMOUNT_RE = re.compile(
    rf"(?P<pre>(?:{_CURRENCY_PATTERN})\s?)?(?P<sign>[-(])?\s*(?P<pre2>(?:{_CURRENCY_PATTERN})\s?)?"
    rf"(?P<number>[1-9]\d{{0,2}}(?:[.,\u00a0 ]\d{{3}})+(?:[.,]\d{{1,2}})?|\d+(?:[.,]\d{{1,2}})?|\d{{1,3}}(?:,\d{{3}})*,\d{{2}})"
    rf"(?P<close>\))?(?:\s?(?P<post>{_CURRENCY_PATTERN}))?",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class Money:
    amount: Decimal
    currency: str | None
    text: str


def normalise_text(text: str) -> str:
    return " ".join(text.translate(_DASHES).split())


def infer_decimal_comma(samples: Iterable[str]) -> bool:
    """True when the document writes cents after a comma (1.234,56), judged over all its amounts."""
    comma = dot = 0
    for sample in samples:
        text = normalise_text(sample)
        comma += len(re.findall(r"\d[.\s]\d{3},\d{2}\b|(?<![\d.,])\d{1,3},\d{2}\b", text))
        dot += len(re.findall(r"\d,\d{3}\.\d{2}\b|(?<![\d.,])\d{1,3}\.\d{2}\b", text))
    return comma > dot


def parse_number(number: str, decimal_comma: bool) -> Decimal | None:
    digits = number.replace("\u00a0", "").replace(" ", "")
    if decimal_comma:
        if re.fullmatch(r"\d{1,3}(\.\d{3})*(,\d{1,2})?|\d+(,\d{1,2})?", digits):
            return Decimal(digits.replace(".", "").replace(",", "."))
    else:
        if re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d{1,2})?|\d+(\.\d{1,2})?", digits):
            return Decimal(digits.replace(",", ""))
        # "34,594,76": grouped with commas, the last group of two is the cents.
        if re.fullmatch(r"\d{1,3}(,\d{3})*,\d{2}", digits):
            head, cents = digits.rsplit(",", 1)
            return Decimal(head.replace(",", "") + "." + cents)
    # Fallback: the last separator followed by 1-2 digits is the decimal point.
    match = re.fullmatch(r"(\d[\d.,]*?)([.,](\d{1,2}))?", digits)
    if not match:
        return None
    whole = re.sub(r"[.,]", "", match[1])
    try:
        return Decimal(whole + ("." + match[3] if match[3] else ""))
    except InvalidOperation:
        return None


def find_amounts(text: str, decimal_comma: bool, default_currency: str | None = None) -> list[Money]:
    """Every amount in a cell, with the currency printed beside it (or the default)."""
    text = normalise_text(text)
    found: list[Money] = []
    for match in AMOUNT_RE.finditer(text):
        value = parse_number(match["number"], decimal_comma)
        if value is None:
            continue
        negative = match["sign"] == "-" or (match["sign"] == "(" and match["close"] == ")")
        symbol = (match["pre"] or match["pre2"] or match["post"] or "").strip().upper()
        currency = CURRENCY_SYMBOLS.get(symbol) if symbol else None
        if currency is None:
            currency = default_currency
        found.append(Money(amount=-value if negative else value, currency=currency, text=match.group(0).strip()))
    return found


def looks_like_amount(text: str) -> bool:
    """A cell that is an amount and nothing else (symbols and sign allowed)."""
    text = normalise_text(text)
    match = AMOUNT_RE.fullmatch(text)
    return bool(match) and bool(re.search(r"[.,]\d{2}$|^\D*\d{4,}\D*$|[£$€¥]", text.rstrip(")")))


# ---------------------------------------------------------------------------------------------
# Dates

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january", "ene", "enero"),
            ("feb", "february", "febrero"),
            ("mar", "march", "marzo"),
            ("apr", "april", "abr", "abril"),
            ("may", "mayo"),
            ("jun", "june", "junio"),
            ("jul", "july", "julio"),
            ("aug", "august", "ago", "agosto"),
            ("sep", "sept", "september", "septiembre", "set"),
            ("oct", "october", "octubre"),
            ("nov", "november", "noviembre"),
            ("dec", "december", "dic", "diciembre"),
        ]
    )
    for m in names
}
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
DATE_RE = re.compile(
    r"(?P<iso>\b(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})\b)"
    r"|(?P<num>\b(?P<a>\d{1,2})[/.\-](?P<b>\d{1,2})[/.\-](?P<c>\d{4}|\d{2})\b)"
    rf"|(?P<named>\b(?P<nd>\d{{1,2}})(?:st|nd|rd|th)?[\s\-]+(?P<nm>{_MONTH_NAMES})\.?[\s\-,]+(?P<ny>\d{{4}}|\d{{2}})\b)"
    rf"|(?P<us>\b(?P<um>{_MONTH_NAMES})\.?\s+(?P<ud>\d{{1,2}}),?\s+(?P<uy>\d{{4}})\b)",
    re.IGNORECASE,
)


def _year(text: str) -> int:
    year = int(text)
    return year + (2000 if year < 70 else 1900) if len(text) == 2 else year


def infer_day_first(samples: Iterable[str], hint: str | None = None) -> bool:
    """Day before month? Decided by any value that only reads one way, else by the hint (header, locale)."""
    day_first_votes = month_first_votes = 0
    for sample in samples:
        for match in DATE_RE.finditer(normalise_text(sample)):
            if match["num"]:
                a, b = int(match["a"]), int(match["b"])
                if a > 12 >= b:
                    day_first_votes += 1
                elif b > 12 >= a:
                    month_first_votes += 1
    if day_first_votes != month_first_votes:
        return day_first_votes > month_first_votes
    if hint:
        return hint.lower().startswith("d")
    return False


def find_dates(text: str, day_first: bool) -> list[date]:
    dates: list[date] = []
    for match in DATE_RE.finditer(normalise_text(text)):
        try:
            if match["iso"]:
                dates.append(date(int(match["iy"]), int(match["im"]), int(match["id"])))
            elif match["num"]:
                a, b = int(match["a"]), int(match["b"])
                day, month = (a, b) if day_first else (b, a)
                dates.append(date(_year(match["c"]), month, day))
            elif match["named"]:
                dates.append(date(_year(match["ny"]), _MONTHS[match["nm"].lower()], int(match["nd"])))
            else:
                dates.append(date(int(match["uy"]), _MONTHS[match["um"].lower()], int(match["ud"])))
        except ValueError:
            continue
    return dates


# ---------------------------------------------------------------------------------------------
# Numbers with stray gaps

# A digit run, one stray space, then the rest of a number ("4 ,725", "1 .525.054,00", "7 97.100,20").
_GAPPED = re.compile(r"(?<![\d.,])(\d{1,3}) ([.,]?\d[\d.,]*\d)(?![\d])")


def well_formed_amount(number: str, decimal_comma: bool) -> bool:
    """Grouped by thousands, with the document's decimal mark (cents optional)."""
    group, mark = (r"\.", ",") if decimal_comma else (",", r"\.")
    return bool(re.fullmatch(rf"\d{{1,3}}(?:{group}\d{{3}})+(?:{mark}\d{{2}})?|\d+{mark}\d{{2}}", number))


def join_stray_gaps(text: str, decimal_comma: bool) -> str:
    """A money cell's numbers with gaps the text layer put inside them, joined only where the joined
    text is a well-formed amount in the document's convention and the pieces are not: a gap before a
    separator ("1 .525,00"), or a lone leading digit run before a number whose first group is short
    ("7 97.100,20")."""

    def join(match: re.Match[str]) -> str:
        left, right = match[1], match[2]
        joined = left + right
        if not well_formed_amount(joined, decimal_comma):
            return match[0]
        if right[0] in ".,":
            return joined
        # "12 345.67": a space may group thousands; keep it, it parses as one amount already.
        first_group = re.match(r"\d+", right)[0]  # type: ignore[index]
        if len(first_group) < 3 and not well_formed_amount(left, decimal_comma):
            return joined
        return match[0]

    return _GAPPED.sub(join, text)
