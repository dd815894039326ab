"""Name resolution: zero wrong matches on the labelled set, and each rule on its own."""

from __future__ import annotations

import pytest

from clay_pipelines.payroll.names import NameResolver, Person, fold, looks_like_organisation
from clay_pipelines.sample_world.payroll_docs import generate_directory

from .name_variants import CASES


@pytest.fixture(scope="module")
def directory():
    return generate_directory(7)


@pytest.fixture(scope="module")
def resolver(directory) -> NameResolver:
    people = [
        Person(
            employee_id=e.id,
            first_name=e.first_name,
            last_name=e.last_name,
            middle_name=e.middle_name,
            preferred_name=e.preferred_name,
        )
        for e in directory
    ]
    return NameResolver(people, {e.llc: e.id for e in directory if e.llc})


def _expected(directory, who) -> str | None:
    if who is None:
        return None
    if isinstance(who, str):
        return next(e.id for e in directory if e.llc == who)
    return next(e.id for e in directory if (e.first_name, e.last_name) == who)


def test_labelled_set_has_no_wrong_match(directory, resolver: NameResolver) -> None:
    assert len(CASES) >= 60
    outcomes = {"right": 0, "wrong": [], "missed": []}
    for printed, printed_id, who in CASES:
        expected = _expected(directory, who)
        got = resolver.resolve(printed, printed_id).employee_id
        if got == expected:
            outcomes["right"] += 1
        elif got is None:
            outcomes["missed"].append(printed)
        else:
            outcomes["wrong"].append(printed)
    assert outcomes["wrong"] == []
    assert outcomes["missed"] == []
    assert outcomes["right"] == len(CASES)


def test_near_namesakes_resolve_only_when_the_name_says_which(resolver: NameResolver) -> None:
    assert resolver.resolve("Kevin McCoy").employee_id == "10001"
    assert resolver.resolve("Kevin McCue").employee_id == "10002"
    ambiguous = resolver.resolve("Jonh Nguyen")
    assert ambiguous.employee_id is None and ambiguous.method == "review"
    assert {c.name for c in ambiguous.candidates[:2]} == {"Jon Nguyen", "John Nguyen"}


def test_surname_alone_never_resolves(resolver: NameResolver) -> None:
    result = resolver.resolve("Smith")
    assert (result.employee_id, result.reason) == (None, "only one name is printed; a surname alone never resolves")
    assert result.candidates[0].name == "Alvaro Smith"  # offered for review, not chosen


def test_companies_only_through_the_llc_mapping(resolver: NameResolver) -> None:
    mapped = resolver.resolve("NM STUDIO, LLC")
    assert (mapped.employee_id, mapped.method) == ("10012", "llc")
    unknown = resolver.resolve("Kevin McCoy Consulting LLC")
    assert unknown.employee_id is None
    assert unknown.reason == "an organisation not in the LLC mapping (companies are never fuzzy-matched to people)"
    assert looks_like_organisation("Japan Motors Trading Company Limited")
    assert not looks_like_organisation("Kevin McCoy")


def test_nicknames_preferred_names_and_accents(resolver: NameResolver) -> None:
    assert resolver.resolve("Bob Scott").method == "nickname"
    assert resolver.resolve("O CEALLAIGH, MELISSA U").employee_name == "Melissa Ó Ceallaigh"
    assert fold("Ó Ceallaigh") == "o ceallaigh" and fold("O'Brien") == "obrien"


def test_printed_id_that_contradicts_the_name_goes_to_review(resolver: NameResolver) -> None:
    result = resolver.resolve("KEVIN MCCUE", printed_id="10001")
    assert result.employee_id is None
    assert result.reason == "printed employee id 10001 belongs to Kevin McCoy, but the name reads as Kevin McCue"


def test_printed_id_of_someone_else_entirely_goes_to_review(resolver: NameResolver) -> None:
    result = resolver.resolve("Priya Natarajan", printed_id="10001")
    assert result.employee_id is None
    assert result.reason == "printed employee id 10001 belongs to Kevin McCoy, not to 'Priya Natarajan'"
    assert resolver.resolve("Kevin McCoy", printed_id="99999").employee_id == "10001"  # unknown id: by name
