"""The generic extractor on registers made for each trait real registers show (no layout is known to it)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pdfplumber
import pytest

from clay_pipelines.payroll import checks, values
from clay_pipelines.payroll.extract import extract_document
from clay_pipelines.payroll.model import Extraction
from clay_pipelines.payroll.templates import TemplateSet
from tests import payroll_trait_pdfs as docs


def _extract(path: Path) -> Extraction:
    return extract_document(path, template_set=TemplateSet([]))


def _rows(extraction: Extraction) -> list[tuple[str, str]]:
    return [(e.employee_name, str(e.amount)) for e in extraction.entries]


# ---------------------------------------------------------------------------------------------
# Kerning


def test_tightly_kerned_register_keeps_the_spaces_of_names_and_headers(tmp_path: Path) -> None:
    rows = [
        ("DOE, J MATTHEW", "E1001", "1,234.56"),
        ("SMITH, ANNA B", "E1002", "2,500.00"),
        ("LEE, KIM", "E1003", "980.10"),
    ]
    path = docs.kerned_register(tmp_path / "kerned.pdf", rows)
    with pdfplumber.open(path) as pdf:  # the document is glued at the usual tolerances
        assert "DOE,JMATTHEW" in [w["text"] for w in pdf.pages[0].extract_words(x_tolerance=1.5)]
    extraction = _extract(path)
    assert _rows(extraction) == [("DOE, J MATTHEW", "1234.56"), ("SMITH, ANNA B", "2500.00"), ("LEE, KIM", "980.10")]
    assert [e.employee_id for e in extraction.entries] == ["E1001", "E1002", "E1003"]


def test_ordinary_spacing_keeps_the_usual_tolerance(tmp_path: Path) -> None:
    from clay_pipelines.payroll.generic import WORD_X_TOLERANCE, word_tolerance

    rows = [("DOE, JOHN MATTHEW", "E1", "10.00"), ("ROE, JANE ANN", "E2", "20.00")] * 4
    path = docs.grid_register(tmp_path / "plain.pdf", ("Payee Name", "Employee ID", "Amount"), rows, (150, 80, 70))
    with pdfplumber.open(path) as pdf:
        assert word_tolerance(pdf.pages[0]) == WORD_X_TOLERANCE


# ---------------------------------------------------------------------------------------------
# Columns by role and by content


def test_payee_and_amount_columns_without_header_words_are_found_by_content(tmp_path: Path) -> None:
    rows = [
        ("R-1", "DOE, JOHN", "Leeds", "1,200.00"),
        ("R-2", "ROE, JANE M", "York", "950.50"),
        ("R-3", "Acme Widgets LLC", "Hull", "4,000.00"),
    ]
    path = docs.grid_register(tmp_path / "content.pdf", ("Ref", "Held by", "Town", "Sum"), rows, (50, 140, 90, 90))
    extraction = _extract(path)
    assert _rows(extraction) == [("DOE, JOHN", "1200.00"), ("ROE, JANE M", "950.50"), ("Acme Widgets LLC", "4000.00")]
    assert "payee column chosen by what its cells look like: 'Held by'" in extraction.warnings
    assert "amount column chosen by what its cells look like: 'Sum'" in extraction.warnings
    assert extraction.entries[0].reference == "Ref: R-1; Town: Leeds"


def test_organisation_paid_beside_the_person_is_the_payee_named_by_its_header(tmp_path: Path) -> None:
    rows = [
        ("Abel, Evan", "DALLAS, TX", "Abel, Evan", "6,325.00"),
        ("Abboud, Maha", "MELROSE PARK, IL", "DIABETES & OBESITY GROUP", "20,350.00"),
        ("Adler, Michael", "DENVER, CO", "Michael L. Adler, MD, PC", "4,125.00"),
    ]
    header = ("Name", "City/State", "Payee Name", "Amount")
    extraction = _extract(docs.grid_register(tmp_path / "speakers.pdf", header, rows, (110, 110, 150, 70)))
    assert _rows(extraction) == [
        ("Abel, Evan", "6325.00"),
        ("DIABETES & OBESITY GROUP", "20350.00"),
        ("Michael L. Adler, MD, PC", "4125.00"),
    ]
    assert extraction.entries[1].reference == "Name: Abboud, Maha; City/State: MELROSE PARK, IL"
    assert not [w for w in extraction.warnings if "payee" in w]


def test_several_payee_columns_no_header_word_decides_are_reported(tmp_path: Path) -> None:
    rows = [("Abel, Evan", "Abel Clinic LLC", "100.00"), ("Roe, Jane", "Roe Care Inc", "200.00")]
    header = ("Speaker Name", "Organisation Name", "Amount")
    extraction = _extract(docs.grid_register(tmp_path / "two.pdf", header, rows, (120, 150, 70)))
    assert _rows(extraction) == [("Abel, Evan", "100.00"), ("Roe, Jane", "200.00")]
    assert "several columns could be the payee ('Speaker Name', 'Organisation Name'): used 'Speaker Name'" in (
        extraction.warnings
    )


def test_a_percentage_column_is_never_the_amount(tmp_path: Path) -> None:
    rows = [("ACME SA", "50,00%", "478.505,80"), ("BETA SRL", "40,00%", "1.500.000,00")]
    header = ("Empresa", "% Adjudicado", "Credito Adjudicado $")
    extraction = _extract(docs.grid_register(tmp_path / "pct.pdf", header, rows, (120, 80, 110)))
    assert _rows(extraction) == [("ACME SA", "478505.80"), ("BETA SRL", "1500000.00")]


# ---------------------------------------------------------------------------------------------
# Subtotals


SUBTOTAL_ROWS = [
    ("Abate, Nicola", "Abate, Nicola", "3", "1,000.00"),
    ("", "Harbor Hospital Inc", "", "500.00"),
    ("Abate, Nicola Total", "", "3", "1,500.00"),
    ("Roe, Jane", "Roe, Jane", "1", "250.00"),
    ("Roe, Jane Total", "", "1", "250.00"),
    ("Subtotal", "", "", "1,750.00"),
    ("Lee, Kim", "Lee, Kim", "2", "300.00"),
    ("Lee, Kim Total", "", "2", "300.00"),
    ("TOTAL", "", "", "2,050.00"),
]


def test_group_total_rows_are_kept_for_reconciliation_never_as_entries(tmp_path: Path) -> None:
    header = ("Name", "Payee Name", "Events", "Amount")
    extraction = _extract(docs.grid_register(tmp_path / "sub.pdf", header, SUBTOTAL_ROWS, (120, 130, 50, 70)))
    assert _rows(extraction) == [
        ("Abate, Nicola", "1000.00"),
        ("Harbor Hospital Inc", "500.00"),
        ("Roe, Jane", "250.00"),
        ("Lee, Kim", "300.00"),
    ]
    printed = [(t.label, t.kind, str(t.amount), t.start_entry, t.end_entry) for t in extraction.printed_totals]
    assert printed == [
        ("Abate, Nicola Total", "group", "1500.00", 0, 2),
        ("Roe, Jane Total", "group", "250.00", 2, 3),
        ("Subtotal", "group", "1750.00", 3, 3),
        ("Lee, Kim Total", "group", "300.00", 3, 4),
        ("TOTAL", "total", "2050.00", 0, 4),
    ]


def test_each_group_total_is_reconciled_with_its_own_rows(tmp_path: Path) -> None:
    header = ("Name", "Payee Name", "Events", "Amount")
    rows = [r for r in SUBTOTAL_ROWS if r[0] != "Subtotal"]
    good = checks.reconcile_total(_extract(docs.grid_register(tmp_path / "g.pdf", header, rows, (120, 130, 50, 70))))
    assert good.passed, good.detail
    assert good.detail.endswith("3 of 3 group totals reconcile")
    wrong = [("Roe, Jane Total", "", "1", "260.00") if r[0] == "Roe, Jane Total" else r for r in rows]
    outcome = checks.reconcile_total(
        _extract(docs.grid_register(tmp_path / "w.pdf", header, wrong, (120, 130, 50, 70)))
    )
    assert not outcome.passed
    assert "2 of 3 group totals reconcile; Roe, Jane Total: extracted 250.00 != printed 260.00" in outcome.detail


# ---------------------------------------------------------------------------------------------
# Cells centred on their row, header cells split across rules


def test_payee_printed_above_and_below_its_row_numbers_is_one_payee(tmp_path: Path) -> None:
    x_name, x_ref, x_amount = 40.0, 250.0, 400.0
    lines = [
        (60.0, [(x_ref, "Reference"), (x_name, "Payee"), (x_amount, "Amount")]),
        (80.0, [(x_ref, "P-001"), (x_name, "TECLA STAR SA"), (x_amount, "478.505,80")]),
        (94.0, [(x_name, "LABORATORIO WEIZUR")]),
        (100.0, [(x_ref, "P-002"), (x_amount, "350.081,50")]),
        (106.0, [(x_name, "ARGENTINA SA")]),
        (120.0, [(x_ref, "P-003"), (x_name, "PEARA SA"), (x_amount, "398.550,10")]),
    ]
    path = docs.borderless_rows(tmp_path / "centred.pdf", lines, right_edges={x_amount: 460.0})
    extraction = _extract(path)
    assert _rows(extraction) == [
        ("TECLA STAR SA", "478505.80"),
        ("LABORATORIO WEIZUR ARGENTINA SA", "350081.50"),
        ("PEARA SA", "398550.10"),
    ]


def test_header_word_overhanging_a_column_rule_is_read_whole(tmp_path: Path) -> None:
    header = ("Cost Centre", "Beneficiary", "Amount")
    rows = [("North", "DOE, JOHN", "100.00"), ("South", "ROE, JANE", "200.00")]
    path = docs.grid_register(tmp_path / "split.pdf", header, rows, (38, 140, 70), header_overhang={0: "Cost Centre"})
    with pdfplumber.open(path) as pdf:  # the cells as the rules cut them
        assert pdf.pages[0].extract_table()[0][:2] == ["Cost Cen", "tre Beneficiary"]
    extraction = _extract(path)
    assert _rows(extraction) == [("DOE, JOHN", "100.00"), ("ROE, JANE", "200.00")]
    assert extraction.entries[0].reference == "Cost Centre: North"


def test_a_word_broken_inside_a_header_cell_is_rejoined() -> None:
    from clay_pipelines.payroll.generic import repair_split_header

    assert repair_split_header(["Otra\nJurisdiccio\nn", "Jurisdicc", "ion EMPRESA", "Tipo de\nproyecto"]) == [
        "Otra\nJurisdiccion",
        "Jurisdiccion",
        "EMPRESA",
        "Tipo de\nproyecto",
    ]


# ---------------------------------------------------------------------------------------------
# Amounts with stray gaps


@pytest.mark.parametrize(
    ("text", "decimal_comma", "joined"),
    [
        ("4 ,725", False, "4,725"),
        ("4 ,725.00", False, "4,725.00"),
        ("1 .525.054,00", True, "1.525.054,00"),
        ("7 97.100,20", True, "797.100,20"),
        ("12 345.67", False, "12 345.67"),  # a space grouping thousands is no stray gap
        ("3 100", False, "3 100"),  # joined it is no amount in this convention: left as printed
        ("1 .525.054,00", False, "1 .525.054,00"),  # not well-formed with a decimal point
    ],
)
def test_stray_gaps_inside_numbers_are_joined_only_into_well_formed_amounts(
    text: str, decimal_comma: bool, joined: str
) -> None:
    assert values.join_stray_gaps(text, decimal_comma) == joined


def test_register_with_gapped_amounts(tmp_path: Path) -> None:
    rows = [("ACME SRL", "1 .525.054,00"), ("BETA SA", "7 97.100,20"), ("GAMMA SA", "1.000,00")]
    extraction = _extract(docs.grid_register(tmp_path / "gaps.pdf", ("Beneficiario", "Importe $"), rows, (150, 90)))
    assert _rows(extraction) == [("ACME SRL", "1525054.00"), ("BETA SA", "797100.20"), ("GAMMA SA", "1000.00")]
    assert sum(e.amount for e in extraction.entries) == Decimal("2323154.20")
