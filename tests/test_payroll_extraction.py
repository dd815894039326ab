"""Payroll PDF extraction: values, triage, templates and the generic extractor, on real PDFs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from clay_pipelines.payroll import values
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.templates import TemplateError, TemplateSet, load_template
from clay_pipelines.payroll.triage import UnreadableDocument
from clay_pipelines.sample_world.payroll_docs import generate_payroll_world

from . import payroll_pdfs

NO_TEMPLATES = TemplateSet([])


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(
    ("text", "decimal_comma", "expected"),
    [
        ("1,234.56", False, [("1234.56", None)]),
        ("1.234,56", True, [("1234.56", None)]),
        ("$ 10.000,00", True, [("10000.00", None)]),
        ("-£65.00", False, [("-65.00", "GBP")]),
        ("(65.00)", False, [("-65.00", None)]),
        ("26406576", False, [("26406576", None)]),
        ("34,594,76", False, [("34594.76", None)]),
        ("62,785,105\n11,200", False, [("62785105", None), ("11200", None)]),
        ("US$ 1,200.00", False, [("1200.00", "USD")]),
        ("€ 1.234,50", True, [("1234.50", "EUR")]),
        ("0 979400", False, [("0", None), ("979400", None)]),
        ("1 234,56 EUR", True, [("1234.56", "EUR")]),
    ],
)
def test_amounts_are_decimals_as_printed(text: str, decimal_comma: bool, expected) -> None:
    found = values.find_amounts(text, decimal_comma)
    assert [(str(m.amount), m.currency) for m in found] == expected
    assert all(isinstance(m.amount, Decimal) for m in found)


@pytest.mark.parametrize(
    ("text", "day_first", "expected"),
    [
        ("13-May-16", False, date(2016, 5, 13)),
        ("13\u2010Sep\u201011", False, date(2011, 9, 13)),
        ("09/10/2013", True, date(2013, 10, 9)),
        ("09/10/2013", False, date(2013, 9, 10)),
        ("2026-01-27", True, date(2026, 1, 27)),
        ("20 Oct 2026", False, date(2026, 10, 20)),
        ("23rd July 2013", False, date(2013, 7, 23)),
        ("October 5, 2025", True, date(2025, 10, 5)),
        ("16\u2010Sept\u201016", False, date(2016, 9, 16)),
    ],
)
def test_dates(text: str, day_first: bool, expected: date) -> None:
    assert values.find_dates(text, day_first) == [expected]


def test_day_order_is_decided_by_the_document() -> None:
    assert values.infer_day_first(["01/02/2026", "25/02/2026"]) is True
    assert values.infer_day_first(["01/02/2026", "02/25/2026"]) is False
    assert values.infer_day_first(["01/02/2026"], hint="dmy") is True
    assert values.infer_decimal_comma(["1.234,56", "10.000,00", "5,00"]) is True
    assert values.infer_decimal_comma(["1,234.56", "12.50"]) is False


# ---------------------------------------------------------------------------------------------
# Triage: every bad input names the file and the reason


def test_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "register.pdf"
    path.write_text("Name,Amount\nJohn,12\n")
    with pytest.raises(UnreadableDocument, match=r"^register\.pdf: not a PDF: it starts with 'Name,Amo'") as error:
        extract_document(path)
    assert error.value.reason == "not_pdf"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    with pytest.raises(UnreadableDocument, match=r"^empty\.pdf: the file is empty"):
        extract_document(path)


def test_corrupt_pdf(tmp_path: Path) -> None:
    good = payroll_pdfs.pay_stub(tmp_path / "good.pdf")
    path = tmp_path / "truncated.pdf"
    path.write_bytes(good.read_bytes()[:300])
    with pytest.raises(UnreadableDocument, match=r"^truncated\.pdf: corrupt or unreadable PDF") as error:
        extract_document(path)
    assert error.value.reason == "corrupt"


def test_encrypted_pdf_needs_its_password(tmp_path: Path) -> None:
    path = payroll_pdfs.encrypted(tmp_path / "locked.pdf", "s3cret")
    with pytest.raises(UnreadableDocument, match=r"^locked\.pdf: encrypted: a password is needed") as error:
        extract_document(path)
    assert error.value.reason == "encrypted"
    with pytest.raises(UnreadableDocument, match="the configured password does not open it"):
        extract_document(path, password="wrong")
    opened = extract_document(path, password="s3cret")
    assert opened.pages == 1
    assert opened.entries == []


def test_scanned_pdf_needs_ocr(tmp_path: Path) -> None:
    path = payroll_pdfs.scanned(tmp_path / "scan.pdf")
    with pytest.raises(
        UnreadableDocument, match=r"^scan\.pdf: no text layer on any of its 1 page\(s\): a scan, OCR is needed"
    ) as error:
        extract_document(path)
    assert error.value.reason == "no_text_layer"


# ---------------------------------------------------------------------------------------------
# The sample world's layouts, through their templates: exact to the cent


@pytest.fixture(scope="module")
def sample_payroll(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("payroll")
    generate_payroll_world(root, 7, date(2026, 1, 15))
    return root


def _as_truth(extraction) -> list[dict]:
    return [
        {
            "employee_name": e.employee_name,
            "employee_id": e.employee_id,
            "date": e.date.isoformat(),
            "amount": str(e.amount),
            "currency": e.currency,
            "reference": e.reference,
            "page": e.page,
        }
        for e in extraction.entries
    ]


def test_sample_layouts_extract_exactly(sample_payroll: Path) -> None:
    pdfs = sorted((sample_payroll / "inbox" / "oms.com").glob("*.pdf"))
    assert len(pdfs) == 7
    for pdf in pdfs:
        truth = json.loads((sample_payroll / "truth" / f"{pdf.stem}.json").read_text())
        extraction = extract_document(pdf)
        expected = [
            {k: e[k] for k in ("employee_name", "employee_id", "date", "amount", "currency", "reference", "page")}
            for e in truth["entries"]
        ]
        assert _as_truth(extraction) == expected, pdf.name
        assert (
            extraction.template
            == {"register": "oms-payroll-register", "statement": "oms-payment-statement"}[truth["layout"]]
        )
        # The printed total is captured for reconciliation, and it matches to the cent.
        assert extraction.printed_totals[-1].amount == Decimal(truth["total"])
        assert sum(e.amount for e in extraction.entries) == Decimal(truth["total"])
        assert extraction.warnings == []


def test_generic_extractor_reads_the_register_without_its_template(sample_payroll: Path) -> None:
    pdf = sorted((sample_payroll / "inbox" / "oms.com").glob("payroll-register-*.pdf"))[0]
    truth = json.loads((sample_payroll / "truth" / f"{pdf.stem}.json").read_text())
    extraction = extract_document(pdf, template_set=NO_TEMPLATES)
    assert extraction.template is None
    assert [(e.employee_name, e.employee_id, e.date.isoformat(), str(e.amount)) for e in extraction.entries] == [
        (e["employee_name"], e["employee_id"], e["date"], e["amount"]) for e in truth["entries"]
    ]
    # Page subtotals and the TOTAL row are totals, not entries.
    labels = [t.label for t in extraction.printed_totals]
    assert labels[-1] == "TOTAL" and labels.count("Page subtotal") == extraction.pages


# ---------------------------------------------------------------------------------------------
# The generic extractor on layouts it has never seen


def test_ruled_multipage_table_with_wrapped_cells_and_totals(tmp_path: Path) -> None:
    header = ["Employee ID", "Employee Name", "Pay Date", "Net Pay", "Notes"]
    rows = [
        [f"E{k:03d}", name, "01/30/2026", amount, note]
        for k, (name, amount, note) in enumerate(
            [
                ("BAIN, J MATTHEW", "1,234.56", ""),
                ("ÁLVAREZ, JOSÉ", "2,000.00", "relocation allowance paid with this run as agreed in the offer letter"),
                ("NGUYEN, THANH", "(65.00)", "correction of an overpayment"),
            ]
            * 25
        )
    ]
    total = sum(Decimal(values.find_amounts(r[3], False)[0].amount) for r in rows)
    path = payroll_pdfs.ruled_register(
        tmp_path / "acme.pdf",
        rows,
        header,
        "Acme Ltd payroll",
        footer_rows=[["", "TOTAL", "", f"{total:,.2f}", ""]],
        widths=(20, 45, 25, 25, 60),
    )
    extraction = extract_document(path, template_set=NO_TEMPLATES)
    assert extraction.pages >= 2  # the header repeats on the next page; it is not an entry
    assert len(extraction.entries) == 75
    first = extraction.entries[:3]
    assert [(e.employee_id, e.employee_name, str(e.amount), e.date) for e in first] == [
        ("E000", "BAIN, J MATTHEW", "1234.56", date(2026, 1, 30)),
        ("E001", "ÁLVAREZ, JOSÉ", "2000.00", date(2026, 1, 30)),
        ("E002", "NGUYEN, THANH", "-65.00", date(2026, 1, 30)),
    ]
    assert first[1].reference == "Notes: relocation allowance paid with this run as agreed in the offer letter"
    assert [(t.label, t.amount) for t in extraction.printed_totals] == [("TOTAL", total)]


def test_borderless_register_with_surname_and_given_name_columns(tmp_path: Path) -> None:
    header = ["Apellido", "Nombre", "Fecha", "Importe"]
    rows = [
        ["PÉREZ", "ANA MARÍA", "09/10/2013", "$ 10.000,00"],
        ["GARCIA DELATOUR", "AGUSTINA", "09/10/2013", "$ 5.500,50"],
        ["O'BRIEN", "LIAM", "09/10/2013", "$ 1.250,00"],
    ]
    path = payroll_pdfs.borderless_register(
        tmp_path / "aportes.pdf", header, rows, [15, 60, 110, 150], right_aligned=[3], title="ANEXO I"
    )
    extraction = extract_document(path, template_set=NO_TEMPLATES)
    assert [(e.employee_name, str(e.amount), e.date) for e in extraction.entries] == [
        ("PÉREZ ANA MARÍA", "10000.00", date(2013, 10, 9)),
        ("GARCIA DELATOUR AGUSTINA", "5500.50", date(2013, 10, 9)),
        ("O'BRIEN LIAM", "1250.00", date(2013, 10, 9)),
    ]


def test_organisations_negative_amounts_and_a_rotated_page(tmp_path: Path) -> None:
    header = ["Payee", "Date", "Amount"]
    rows = [
        ["Japan Motors Trading Company Limited", "13-Sep-11", "-£65.00"],
        ["Western Automobile Centre", "13-Oct-11", "£214,885.63"],
    ]
    path = payroll_pdfs.borderless_register(tmp_path / "awards.pdf", header, rows, [15, 110, 150], right_aligned=[2])
    for candidate in (path, payroll_pdfs.rotate_pages(path, 90)):
        extraction = extract_document(candidate, template_set=NO_TEMPLATES)
        assert [(e.employee_name, str(e.amount), e.currency, e.date) for e in extraction.entries] == [
            ("Japan Motors Trading Company Limited", "-65.00", "GBP", date(2011, 9, 13)),
            ("Western Automobile Centre", "214885.63", "GBP", date(2011, 10, 13)),
        ], candidate.name


def test_rows_without_amounts_give_no_entries_and_say_so(tmp_path: Path) -> None:
    header = ["Employee Name", "Department", "Amount"]
    rows = [["Maria Lopez", "Finance", ""], ["John Doe", "Sales", ""]]
    path = payroll_pdfs.borderless_register(tmp_path / "roster.pdf", header, rows, [15, 80, 150])
    extraction = extract_document(path, template_set=NO_TEMPLATES)
    assert extraction.entries == []
    assert extraction.warnings == ["2 row(s) name a payee but print no amount: no entries (amounts are never invented)"]


def test_pay_stub_gives_its_lines_and_a_warning(tmp_path: Path) -> None:
    extraction = extract_document(payroll_pdfs.pay_stub(tmp_path / "stub.pdf"), template_set=NO_TEMPLATES)
    assert [(e.employee_name, str(e.amount), e.line_type, e.date) for e in extraction.entries] == [
        ("REGULAR", "4000.00", "earning", date(2026, 3, 31)),
        ("Fed Income Tax", "600.00", "deduction", date(2026, 3, 31)),
        ("Medicare", "58.00", "deduction", date(2026, 3, 31)),
    ]
    assert any("pay stub" in w for w in extraction.warnings)


def test_document_without_a_payment_table(tmp_path: Path) -> None:
    path = payroll_pdfs.borderless_register(tmp_path / "memo.pdf", ["Dear", "team"], [["see", "attached"]], [15, 60])
    extraction = extract_document(path, template_set=NO_TEMPLATES)
    assert extraction.entries == []
    assert extraction.warnings == ["no payment table found: no header names a payee and an amount column"]


# ---------------------------------------------------------------------------------------------
# Templates and the command line


def test_bad_templates_are_refused_with_the_file_named(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nkeywords: [x]\nkind: table\ncolumns: {name: Name}\n")
    with pytest.raises(TemplateError, match=r"^a\.yaml: 'columns' must name the amount column"):
        load_template(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: b\nkind: pdf\nkeywords: []\n")
    with pytest.raises(TemplateError, match=r"^b\.yaml: kind must be 'table' or 'blocks', not 'pdf'"):
        load_template(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(TemplateError, match=r"^c\.yaml: not valid YAML"):
        load_template(tmp_path / "c.yaml")


def _clay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clay_pipelines.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_extract_json(sample_payroll: Path) -> None:
    pdf = sorted((sample_payroll / "inbox" / "oms.com").glob("payment-statement-*.pdf"))[0]
    result = _clay("payroll", "extract", str(pdf), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"source_file", "pages", "template", "entries", "printed_totals", "warnings"}
    assert document["source_file"] == pdf.name
    entry = document["entries"][0]
    assert {"employee_name", "employee_id", "date", "amount", "currency", "reference", "page"} <= set(entry)
    assert isinstance(entry["amount"], str) and Decimal(entry["amount"]) > 0
    assert date.fromisoformat(entry["date"])


def test_cli_extract_unreadable_exits_2_with_one_line(tmp_path: Path) -> None:
    path = payroll_pdfs.encrypted(tmp_path / "locked.pdf", "pw")
    result = _clay("payroll", "extract", str(path), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr.strip()
        == f"clay: error: {path}: encrypted: a password is needed (configure one for this file or sender)"
    )
    opened = _clay("payroll", "extract", str(path), "--password", "pw", "--json")
    assert opened.returncode == 0
