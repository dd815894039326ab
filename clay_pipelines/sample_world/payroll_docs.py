"""The sample world's payroll: an employee directory and an inbox of generated payroll PDFs.

Two layouts, as real payroll departments receive them:
  * "register": a ruled table (Emp No, LAST, FIRST M, department, pay date, gross, deductions,
    net, reference), continued over pages with the header repeated, page subtotals and a TOTAL;
  * "statement": payment blocks of several lines per payee (name as "First Last" or an LLC,
    sometimes with an employee id, a reference that wraps), and a closing total.
Names are printed the way people write them (nicknames, initials, missing accents, LLCs), so name
resolution has real work to do. Every PDF has its ground truth beside it, and PDFs are
byte-for-byte reproducible (fixed creation date), so re-seeding does not look like new files.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
from fpdf import FPDF

FIRST_NAMES = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "Michael",
    "Jennifer",
    "William",
    "Linda",
    "David",
    "Elizabeth",
    "Richard",
    "Barbara",
    "Joseph",
    "Susan",
    "Thomas",
    "Jessica",
    "Charles",
    "Sarah",
    "Christopher",
    "Karen",
    "Daniel",
    "Margaret",
    "Matthew",
    "Nancy",
    "Anthony",
    "Lisa",
    "Steven",
    "Sandra",
    "Andrew",
    "Ashley",
    "Joshua",
    "Kimberly",
    "Kenneth",
    "Emily",
    "Kevin",
    "Donna",
    "Brian",
    "Michelle",
    "Timothy",
    "Carol",
    "Ronald",
    "Amanda",
    "Edward",
    "Melissa",
    "Jason",
    "Deborah",
    "Jeffrey",
    "Stephanie",
    "Gregory",
    "Rebecca",
    "Priya",
    "Wei",
    "Aisha",
    "Dmitri",
    "José",
    "Zoë",
    "Siobhán",
    "Renée",
    "Björn",
    "Chloé",
    "Nuño",
    "Inés",
    "Kwame",
    "Yuki",
    "Mateo",
    "Fatima",
    "Oluwaseun",
    "Ngozi",
    "Thanh",
    "Raúl",
)
LAST_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "O'Brien",
    "Natarajan",
    "Volkov",
    "Bello",
    "Kowalski",
    "Álvarez",
    "Müller",
    "Ó Ceallaigh",
    "Brontë",
    "Núñez",
    "Okafor",
    "Tanaka",
    "Haddad",
    "Van der Berg",
    "McAllister",
    "St. James",
    "Dubois",
    "Lindqvist",
)
NICKNAMES = {
    "Robert": "Bob",
    "William": "Bill",
    "Margaret": "Peg",
    "Elizabeth": "Liz",
    "Richard": "Dick",
    "James": "Jim",
    "Joseph": "Joe",
    "Thomas": "Tom",
    "Michael": "Mike",
    "Jennifer": "Jen",
    "Daniel": "Dan",
    "Matthew": "Matt",
    "Anthony": "Tony",
    "Steven": "Steve",
    "Andrew": "Andy",
    "Joshua": "Josh",
    "Kenneth": "Ken",
    "Christopher": "Chris",
    "Timothy": "Tim",
    "Ronald": "Ron",
    "Edward": "Ted",
    "Jeffrey": "Jeff",
    "Gregory": "Greg",
    "Rebecca": "Becky",
    "Patricia": "Patty",
    "Deborah": "Debbie",
    "Kimberly": "Kim",
    "Stephanie": "Steph",
    "Charles": "Chuck",
    "Susan": "Sue",
}
DEPARTMENTS = ("Consulting", "Finance", "HR", "Engineering", "Operations", "Sales", "Legal")
TITLES = {
    "Consulting": ("Senior Consultant", "Consultant", "Engagement Manager"),
    "Finance": ("Accountant", "Controller", "Payroll Specialist"),
    "HR": ("HR Generalist", "Recruiter", "HR Director"),
    "Engineering": ("Software Engineer", "Data Engineer", "Engineering Manager"),
    "Operations": ("Office Manager", "Operations Analyst", "Facilities Lead"),
    "Sales": ("Account Executive", "Sales Director", "BDR"),
    "Legal": ("Counsel", "Paralegal"),
}
STATES = ("TX", "CA", "NY", "FL", "OH", "GA", "WA")
# Pairs that look alike on purpose: a resolver that fuzzy-matches loosely confuses them.
NEAR_NAMESAKES = (
    (("Kevin", "", "McCoy"), ("Kevin", "", "McCue")),
    (("Alvaro", "", "Smith"), ("Alvaro", "J", "Smyth")),
    (("Jon", "", "Nguyen"), ("John", "", "Nguyen")),
    (("Anne", "Marie", "Lee"), ("Ann", "", "Li")),
    (("Catherine", "", "Johnson"), ("Kathryn", "", "Johnston")),
)
LLC_SUFFIXES = ("Consulting LLC", "Advisory LLC", "Partners LLC", "Studio LLC", "Solutions LLC")


@dataclass(frozen=True)
class Employee:
    id: str
    first_name: str
    middle_name: str
    last_name: str
    preferred_name: str | None
    department: str
    job_title: str
    location: str
    employment_type: str  # "employee" or "contractor"
    llc: str | None
    net_pay: str  # typical net per pay period, as a decimal string
    work_email: str

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _email(first: str, last: str, taken: set[str]) -> str:
    base = f"{_ascii(first).lower()}.{_ascii(last).lower().replace(' ', '').replace(chr(39), '')}"
    email, k = f"{base}@oms.com", 2
    while email in taken:
        email, k = f"{base}{k}@oms.com", k + 1
    taken.add(email)
    return email


def generate_directory(seed: int, size: int = 178) -> list[Employee]:
    rng = np.random.default_rng(seed + 11)
    people: list[tuple[str, str, str]] = [p for pair in NEAR_NAMESAKES for p in pair]
    seen = {(f, la) for f, _, la in people}
    while len(people) < size:
        first = FIRST_NAMES[int(rng.integers(0, len(FIRST_NAMES)))]
        last = LAST_NAMES[int(rng.integers(0, len(LAST_NAMES)))]
        if (first, last) in seen:
            continue
        seen.add((first, last))
        middle = chr(ord("A") + int(rng.integers(0, 26))) if rng.random() < 0.45 else ""
        people.append((first, middle, last))

    emails: set[str] = set()
    directory: list[Employee] = []
    for k, (first, middle, last) in enumerate(people):
        department = DEPARTMENTS[int(rng.integers(0, len(DEPARTMENTS)))]
        titles = TITLES[department]
        contractor = k >= len(NEAR_NAMESAKES) * 2 and rng.random() < 0.09
        llc = None
        if contractor:
            initials = f"{_ascii(first)[0]}{_ascii(last)[0]}"
            llc = f"{initials} {LLC_SUFFIXES[int(rng.integers(0, len(LLC_SUFFIXES)))]}"
            if any(e.llc == llc for e in directory):
                llc = f"{_ascii(last)} {LLC_SUFFIXES[int(rng.integers(0, len(LLC_SUFFIXES)))]}"
        net = Decimal(str(round(float(rng.lognormal(np.log(3100), 0.35)), 2)))
        directory.append(
            Employee(
                id=str(10001 + k),
                first_name=first,
                middle_name=middle,
                last_name=last,
                preferred_name=NICKNAMES.get(first) if rng.random() < 0.6 else None,
                department=department,
                job_title=titles[int(rng.integers(0, len(titles)))],
                location=STATES[int(rng.integers(0, len(STATES)))],
                employment_type="contractor" if contractor else "employee",
                llc=llc,
                net_pay=str(net.quantize(Decimal("0.01"))),
                work_email=_email(first, last, emails),
            )
        )
    return directory


# ---------------------------------------------------------------------------------------------
# How a name gets printed on a document


def printed_name(employee: Employee, style: str, rng: np.random.Generator) -> str:
    first, middle, last = employee.first_name, employee.middle_name, employee.last_name
    if style == "register":  # LAST, FIRST M  (uppercase, as payroll software prints)
        given = first
        if rng.random() < 0.15:
            given = _ascii(given)  # accents lost by the payroll export
        text = f"{last}, {given}" + (f" {middle}" if middle else "")
        return text.upper()
    # statement: how a person types it
    roll = rng.random()
    given = first
    if employee.preferred_name and roll < 0.35:
        given = employee.preferred_name
    elif roll < 0.5:
        given = _ascii(first)
    if middle and rng.random() < 0.5:
        return f"{given} {middle}. {last}"
    return f"{given} {last}"


# ---------------------------------------------------------------------------------------------
# Money and PDFs

CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


@dataclass(frozen=True)
class TruthEntry:
    employee_name: str
    employee_id: str | None
    date: str
    amount: str
    currency: str
    reference: str
    page: int
    expected_employee_id: str  # who the entry really pays (for name resolution)


class _Pdf(FPDF):
    def __init__(self, title: str, created: datetime, orientation: str = "P") -> None:
        super().__init__(orientation=orientation, unit="mm", format="Letter")
        self.set_creation_date(created)
        self.set_title(title)
        self.set_author("OMS Consulting Payroll")
        self.set_creator("OMS payroll export")
        self.set_producer("OMS payroll export")
        self.set_auto_page_break(auto=False)
        self.set_margins(12, 12, 12)

    def latin(self, text: str) -> str:
        # Core fonts are Latin-1; every name in the sample world is.
        return text.encode("latin-1", "replace").decode("latin-1")


def _register_pdf(
    path: Path, pay_date: date, period: tuple[date, date], rows: list[tuple[Employee, str, Decimal, Decimal]]
) -> list[TruthEntry]:
    created = datetime(pay_date.year, pay_date.month, pay_date.day, 9, 0, tzinfo=UTC)
    # Landscape: the Reference column must hold "Contractor - XY Advisory LLC" without clipping.
    pdf = _Pdf(f"Payroll register {pay_date.isoformat()}", created, orientation="L")
    pdf.set_font("Helvetica", size=8)
    headers = ("Emp No", "Employee Name", "Department", "Pay Date", "Gross Pay", "Deductions", "Net Pay", "Reference")
    widths = (16, 52, 26, 20, 24, 22, 24, 71)
    rows_per_page = 24
    truth: list[TruthEntry] = []
    total = Decimal(0)
    pages = [rows[i : i + rows_per_page] for i in range(0, len(rows), rows_per_page)]
    date_text = pay_date.strftime("%m/%d/%Y")
    for page_no, page_rows in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 7, "OMS Consulting - Payroll Register", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        pdf.cell(
            0,
            5,
            f"Pay period {period[0].strftime('%m/%d/%Y')} - {period[1].strftime('%m/%d/%Y')}    "
            f"Pay date {date_text}    Page {page_no} of {len(pages)}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 8)
        for header, width in zip(headers, widths, strict=True):
            pdf.cell(width, 6, header, border=1, align="C")
        pdf.ln()
        pdf.set_font("Helvetica", size=8)
        subtotal = Decimal(0)
        for employee, name, gross, net in page_rows:
            reference = f"Contractor - {employee.llc}" if employee.llc else employee.job_title
            values = (
                employee.id,
                name,
                employee.department,
                date_text,
                _money(gross),
                _money(gross - net),
                _money(net),
                reference,
            )
            for k, (value, width) in enumerate(zip(values, widths, strict=True)):
                pdf.cell(width, 6, pdf.latin(value), border=1, align="R" if 4 <= k <= 6 else "L")
            pdf.ln()
            subtotal += net
            truth.append(
                TruthEntry(name, employee.id, pay_date.isoformat(), str(net), "USD", reference, page_no, employee.id)
            )
        total += subtotal
        pdf.set_font("Helvetica", "B", 8)
        pdf.cell(sum(widths[:6]), 6, "Page subtotal", border=1, align="R")
        pdf.cell(widths[6], 6, _money(subtotal), border=1, align="R")
        pdf.cell(widths[7], 6, "", border=1)
        pdf.ln()
        if page_no == len(pages):
            pdf.cell(sum(widths[:6]), 6, "TOTAL", border=1, align="R")
            pdf.cell(widths[6], 6, _money(total), border=1, align="R")
            pdf.cell(widths[7], 6, f"{len(rows)} employees", border=1)
            pdf.ln()
    pdf.output(str(path))
    return truth


def _statement_pdf(
    path: Path, pay_date: date, rows: list[tuple[Employee, str, Decimal, str, bool]]
) -> list[TruthEntry]:
    created = datetime(pay_date.year, pay_date.month, pay_date.day, 9, 0, tzinfo=UTC)
    pdf = _Pdf(f"Payment statement {pay_date.isoformat()}", created)
    date_text = pay_date.strftime("%d %b %Y")
    truth: list[TruthEntry] = []
    total = Decimal(0)

    def header() -> None:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 13)
        pdf.cell(0, 8, "OMS Consulting", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        pdf.cell(0, 6, "Staff and Contractor Payment Statement", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 6, f"Payment date: {date_text}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)

    header()
    for employee, name, net, reference, show_id in rows:
        if pdf.get_y() > 235:
            header()
        page_no = pdf.page_no()
        pdf.set_draw_color(160, 160, 160)
        pdf.line(12, pdf.get_y(), 204, pdf.get_y())
        pdf.ln(2)
        top = pdf.get_y()
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(120, 5, pdf.latin(f"Payee: {name}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        if show_id:
            pdf.cell(120, 5, f"Employee ID: {employee.id}", new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(110, 5, pdf.latin(f"Reference: {reference}"), new_x="LMARGIN", new_y="NEXT")
        bottom = pdf.get_y()
        pdf.set_xy(150, top)
        pdf.set_font("Helvetica", size=8)
        pdf.cell(54, 5, "Net amount", align="R", new_x="LEFT", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(54, 5, f"$ {_money(net)}", align="R")
        pdf.set_xy(12, max(bottom, top + 10) + 2)
        total += net
        truth.append(
            TruthEntry(
                name,
                employee.id if show_id else None,
                pay_date.isoformat(),
                str(net),
                "USD",
                reference,
                page_no,
                employee.id,
            )
        )
    pdf.line(12, pdf.get_y(), 204, pdf.get_y())
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, f"Total paid: $ {_money(total)}", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return truth


def _write_if_changed(path: Path, content: bytes) -> None:
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)


def generate_payroll_world(root: Path, seed: int, anchor: date) -> dict[str, Any]:
    """Write the directory, the inbox PDFs and their truth under root; returns a summary."""
    rng = np.random.default_rng(seed + 23)
    directory = generate_directory(seed)
    inbox = root / "inbox" / "oms.com"
    truth_dir = root / "truth"
    for folder in (inbox, truth_dir, root / "directory"):
        folder.mkdir(parents=True, exist_ok=True)
    directory_json = json.dumps([asdict(e) for e in directory], indent=1, ensure_ascii=False).encode()
    _write_if_changed(root / "directory" / "oms.com.json", directory_json)
    llc_map = {e.llc: e.id for e in directory if e.llc}
    _write_if_changed(root / "directory" / "oms.com.llc.json", json.dumps(llc_map, indent=1, sort_keys=True).encode())

    # Bi-weekly Fridays before the anchor.
    last_friday = anchor - timedelta(days=(anchor.weekday() - 4) % 7 or 7)
    files: list[dict[str, Any]] = []
    staff = [e for e in directory if e.employment_type == "employee"]
    contractors = [e for e in directory if e.employment_type == "contractor"]
    for k in range(4):
        pay_date = last_friday - timedelta(weeks=2 * k)
        period = (pay_date - timedelta(days=13), pay_date)
        chosen_idx = sorted(rng.choice(len(directory), size=int(rng.integers(40, 75)), replace=False))
        rows = []
        for i in chosen_idx:
            employee = directory[int(i)]
            net = (Decimal(employee.net_pay) * Decimal(str(rng.uniform(0.9, 1.1)))).quantize(CENT, ROUND_HALF_UP)
            gross = (net * Decimal(str(rng.uniform(1.22, 1.42)))).quantize(CENT, ROUND_HALF_UP)
            rows.append((employee, printed_name(employee, "register", rng), gross, net))
        name = f"payroll-register-{pay_date.isoformat()}.pdf"
        truth = _register_pdf(inbox / name, pay_date, period, rows)
        files.append({"file": name, "layout": "register", "pay_date": pay_date.isoformat(), "entries": truth})
    for k in range(3):
        pay_date = last_friday - timedelta(weeks=2 * k, days=3)
        picked = list(rng.choice(len(contractors), size=min(len(contractors), int(rng.integers(5, 9))), replace=False))
        bonus = list(rng.choice(len(staff), size=int(rng.integers(4, 9)), replace=False))
        rows_s = []
        for i in picked:
            employee = contractors[int(i)]
            net = (Decimal(employee.net_pay) * Decimal(str(rng.uniform(0.5, 1.6)))).quantize(CENT, ROUND_HALF_UP)
            name_shown = (
                employee.llc if rng.random() < 0.5 and employee.llc else printed_name(employee, "statement", rng)
            )
            reference = (
                f"Contractor - {employee.llc} - invoice {int(rng.integers(1000, 9999))} for consulting services "
                f"rendered in the period ending {pay_date.strftime('%d %b %Y')}"
            )
            rows_s.append((employee, name_shown, net, reference, False))
        for i in bonus:
            employee = staff[int(i)]
            net = Decimal(str(round(float(rng.uniform(150, 2500)), 2))).quantize(CENT)
            rows_s.append(
                (
                    employee,
                    printed_name(employee, "statement", rng),
                    net,
                    "Quarterly performance bonus",
                    bool(rng.random() < 0.6),
                )
            )
        order = rng.permutation(len(rows_s))
        rows_s = [rows_s[int(i)] for i in order]
        name = f"payment-statement-{pay_date.isoformat()}.pdf"
        truth = _statement_pdf(inbox / name, pay_date, rows_s)
        files.append({"file": name, "layout": "statement", "pay_date": pay_date.isoformat(), "entries": truth})

    for item in files:
        entries = [asdict(e) for e in item["entries"]]
        total = sum((Decimal(e["amount"]) for e in entries), Decimal(0))
        document = {
            "source_file": item["file"],
            "layout": item["layout"],
            "pay_date": item["pay_date"],
            "currency": "USD",
            "total": str(total),
            "entries": entries,
        }
        truth_name = item["file"].removesuffix(".pdf") + ".json"
        _write_if_changed(truth_dir / truth_name, json.dumps(document, indent=1, ensure_ascii=False).encode())
    return {
        "employees": len(directory),
        "contractors": len(contractors),
        "documents": len(files),
        "entries": sum(len(f["entries"]) for f in files),
        "inbox": str(inbox),
    }
