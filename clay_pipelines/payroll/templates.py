"""Layout templates: small declarative YAML files that recognise a layout by its keywords and say
how to read it (in the manner of invoice2data). Two kinds:

  kind: table   a ruled table; `columns` maps roles to header texts; pdfplumber table settings,
                date order, decimal mark and currency are fixed instead of inferred.
  kind: blocks  payment blocks of several lines: a regex starts a block, others pick fields; the
                amount is read from a region of the page (for example the right-hand column).

Templates ship in clay_pipelines/payroll/templates/; more can be added from a folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pdfplumber
import yaml

from clay_pipelines.payroll import generic, values
from clay_pipelines.payroll.model import Entry, Extraction, PrintedTotal

BUILTIN_DIR = Path(__file__).parent / "templates"


class TemplateError(ValueError):
    """A template file that cannot be used, named with what is wrong."""


@dataclass(kw_only=True)
class Template:
    name: str
    path: Path
    keywords: list[str]
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)

    def matches(self, first_page_text: str) -> bool:
        text = first_page_text.lower()
        return all(k.lower() in text for k in self.keywords)

    def _conventions(self, pdf: pdfplumber.PDF) -> generic.Conventions:
        texts = [p.extract_text(x_tolerance=generic.WORD_X_TOLERANCE) or "" for p in pdf.pages]
        conv = generic.document_conventions(texts, self.spec.get("currency"), self.spec.get("date_order"))
        if "decimal" in self.spec:
            conv.decimal_comma = self.spec["decimal"] == ","
        if "date_order" in self.spec:
            conv.day_first = self.spec["date_order"].lower().startswith("d")
        if pattern := self.spec.get("document_date"):
            match = re.search(pattern, "\n".join(texts))
            if match:
                conv.document_date = self._parse_date(match["value"], conv)
        return conv

    def _parse_date(self, text: str, conv: generic.Conventions):
        for fmt in self.spec.get("date_formats", []):
            try:
                return datetime.strptime(values.normalise_text(text), fmt).date()
            except ValueError:
                continue
        found = values.find_dates(text, conv.day_first)
        return found[0] if found else None

    def extract(self, pdf: pdfplumber.PDF, source_file: str) -> Extraction:
        extraction = Extraction(source_file=source_file, pages=len(pdf.pages), template=self.name)
        conv = self._conventions(pdf)
        if self.kind == "table":
            self._extract_table(pdf, conv, extraction)
        else:
            self._extract_blocks(pdf, conv, extraction)
        return extraction

    # -- kind: table ------------------------------------------------------------------------

    def _match_header(self, cells: list[str]) -> generic.ColumnRoles | None:
        wanted: dict[str, str] = self.spec["columns"]
        normal = [" ".join(c.split()).lower() for c in cells]
        by_role: dict[str, int] = {}
        for role, header in wanted.items():
            if header.lower() not in normal:
                return None
            by_role[role] = normal.index(header.lower())
        return generic.ColumnRoles(headers=list(cells), by_role=by_role)

    def _extract_table(self, pdf: pdfplumber.PDF, conv: generic.Conventions, extraction: Extraction) -> None:
        previous = None
        contexts = []
        for number, page in enumerate(pdf.pages, start=1):
            found = generic.ruled_tables(page, number, previous, self._match_header, self.spec.get("table_settings"))
            contexts += found
            previous = found[-1] if found else previous
        if not contexts:
            extraction.warnings.append(f"template {self.name}: no table with the expected header")
        skipped = generic.Skipped()
        for context in contexts:
            generic.build_entries(context, conv, extraction, f"template:{self.name}", skipped)
        skipped.warn(extraction)
        self._totals(pdf, conv, extraction)

    # -- kind: blocks -----------------------------------------------------------------------

    def _extract_blocks(self, pdf: pdfplumber.PDF, conv: generic.Conventions, extraction: Extraction) -> None:
        spec = self.spec["blocks"]
        fields = {name: re.compile(pattern) for name, pattern in spec.get("fields", {}).items()}
        for number, page in enumerate(pdf.pages, start=1):
            for block, money in _page_blocks(page, spec, conv):
                if not money:
                    extraction.warnings.append(f"page {number}: block '{block['name']}' prints no amount; skipped")
                    continue
                found = _block_fields(block["lines"], fields, spec.get("continues"))
                extraction.entries.append(
                    Entry(
                        employee_name=" ".join(block["name"].split()),
                        amount=money[0].amount,
                        page=number,
                        employee_id=found.get("employee_id"),
                        date=conv.document_date,
                        currency=money[0].currency,
                        reference=found.get("reference"),
                        extractor=f"template:{self.name}",
                    )
                )
        self._totals(pdf, conv, extraction)

    def _totals(self, pdf: pdfplumber.PDF, conv: generic.Conventions, extraction: Extraction) -> None:
        pattern = self.spec.get("total")
        if not pattern:
            return
        for number, page in enumerate(pdf.pages, start=1):
            for match in re.finditer(pattern, page.extract_text(x_tolerance=generic.WORD_X_TOLERANCE) or ""):
                for money in values.find_amounts(match["value"], conv.decimal_comma, conv.default_currency):
                    extraction.printed_totals.append(
                        PrintedTotal(
                            label=match.group(0).strip(), amount=money.amount, currency=money.currency, page=number
                        )
                    )


def _page_blocks(page: Any, spec: dict[str, Any], conv: generic.Conventions) -> list[tuple[dict[str, Any], list]]:
    """The page's payment blocks (a start line and the lines under it, in the left region) with the
    amounts printed beside each in the right region."""
    start = re.compile(spec["start"])
    boundary = page.width * float(spec.get("amount_region_x0", 0.7))
    left = page.crop((0, 0, boundary, page.height))
    right = page.crop((boundary, 0, page.width, page.height))
    amounts = [(line["top"], line["text"]) for line in right.extract_text_lines(x_tolerance=generic.WORD_X_TOLERANCE)]
    blocks: list[dict[str, Any]] = []
    for line in left.extract_text_lines(x_tolerance=generic.WORD_X_TOLERANCE):
        text = line["text"].strip()
        if match := start.match(text):
            blocks.append({"top": line["top"], "bottom": line["bottom"], "name": match["value"], "lines": []})
        elif blocks:
            blocks[-1]["lines"].append(text)
            blocks[-1]["bottom"] = line["bottom"]
    paired = []
    for k, block in enumerate(blocks):
        limit = blocks[k + 1]["top"] if k + 1 < len(blocks) else block["bottom"] + 1
        money = [
            m
            for top, text in amounts
            if block["top"] - 2 <= top < limit
            for m in values.find_amounts(text, conv.decimal_comma, conv.default_currency)
        ]
        paired.append((block, money))
    return paired


def _block_fields(lines: list[str], fields: dict[str, re.Pattern[str]], continues: str | None) -> dict[str, str]:
    """A block's fields by their patterns; a line no pattern matches continues the field named `continues`."""
    found: dict[str, str] = {}
    current = None
    for text in lines:
        for field_name, pattern in fields.items():
            if match := pattern.match(text):
                found[field_name] = match["value"].strip()
                current = field_name
                break
        else:
            if current == continues:
                found[current] = f"{found[current]} {text.strip()}"
    return found


def load_template(path: Path) -> Template:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TemplateError(f"{path.name}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise TemplateError(f"{path.name}: a template is a mapping")
    missing = [k for k in ("name", "keywords", "kind") if k not in data]
    if missing:
        raise TemplateError(f"{path.name}: missing {', '.join(missing)}")
    if data["kind"] not in ("table", "blocks"):
        raise TemplateError(f"{path.name}: kind must be 'table' or 'blocks', not {data['kind']!r}")
    if data["kind"] == "table" and not isinstance(data.get("columns"), dict):
        raise TemplateError(f"{path.name}: a table template maps roles to header texts under 'columns'")
    if data["kind"] == "table" and "amount" not in data["columns"]:
        raise TemplateError(f"{path.name}: 'columns' must name the amount column")
    if data["kind"] == "blocks" and "start" not in data.get("blocks", {}):
        raise TemplateError(f"{path.name}: a blocks template needs blocks.start")
    for key in ("document_date", "total"):
        if key in data:
            try:
                re.compile(data[key])
            except re.error as error:
                raise TemplateError(f"{path.name}: {key} is not a valid regex ({error})") from error
    return Template(name=data["name"], path=path, keywords=list(data["keywords"]), kind=data["kind"], spec=data)


class TemplateSet:
    def __init__(self, templates: list[Template]) -> None:
        self.templates = templates

    @classmethod
    def from_folders(cls, *folders: Path) -> TemplateSet:
        found: list[Template] = []
        for folder in folders:
            found += [load_template(p) for p in sorted(folder.glob("*.y*ml"))]
        return cls(found)

    def match(self, pdf: pdfplumber.PDF) -> Template | None:
        first = pdf.pages[0].extract_text(x_tolerance=generic.WORD_X_TOLERANCE) or ""
        return next((t for t in self.templates if t.matches(first)), None)


def default_templates() -> TemplateSet:
    return TemplateSet.from_folders(BUILTIN_DIR)
