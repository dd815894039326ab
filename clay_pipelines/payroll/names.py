"""Resolving a printed payee name to an employee of the directory.

What the old Fuse.js (threshold 0.4) match got wrong, and what this does instead:
  * "LAST, FIRST M" and "First M. Last" are parsed (nameparser) into given, middle and family names,
    compared part by part; accents, case and punctuation are folded away (Ó Ceallaigh = O CEALLAIGH).
  * Nicknames count as the same given name (Bob/Robert, Peg/Margaret, ...), as does the
    employee's preferred name in the directory.
  * Companies (LLC, Ltd, Inc, ...) resolve only through the explicit LLC mapping, never by fuzzy
    similarity to a person.
  * A surname alone never resolves ("Smith" is not Alvaro Smith).
  * A fuzzy match is accepted only above a score threshold and with a clear margin over the
    runner-up; near-namesakes (Kevin McCoy / Kevin McCue, Jon / John Nguyen) therefore resolve only
    when the printed name says which one, and go to review otherwise.
Everything not confidently resolved is returned for review with its best candidates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from nameparser import HumanName
from rapidfuzz import fuzz, process

NICKNAME_GROUPS: tuple[tuple[str, ...], ...] = (
    ("robert", "bob", "bobby", "rob", "robbie", "bert"),
    ("william", "bill", "billy", "will", "willy", "liam"),
    ("margaret", "peg", "peggy", "maggie", "meg", "marge"),
    ("elizabeth", "liz", "beth", "betty", "eliza", "libby"),
    ("richard", "dick", "rick", "ricky", "rich"),
    ("james", "jim", "jimmy", "jamie"),
    ("joseph", "joe", "joey"),
    ("thomas", "tom", "tommy"),
    ("michael", "mike", "mikey", "mick"),
    ("jennifer", "jen", "jenny"),
    ("daniel", "dan", "danny"),
    ("matthew", "matt"),
    ("anthony", "tony"),
    ("steven", "steve"),
    ("stephen", "steve"),
    ("andrew", "andy", "drew"),
    ("joshua", "josh"),
    ("kenneth", "ken", "kenny"),
    ("christopher", "chris", "kit"),
    ("timothy", "tim", "timmy"),
    ("ronald", "ron", "ronnie"),
    ("edward", "ed", "ted", "eddie", "ned"),
    ("jeffrey", "jeff"),
    ("gregory", "greg"),
    ("rebecca", "becky", "becca"),
    ("patricia", "pat", "patty", "trish"),
    ("deborah", "debbie", "deb"),
    ("kimberly", "kim"),
    ("stephanie", "steph"),
    ("charles", "chuck", "charlie", "chas"),
    ("susan", "sue", "suzy"),
    ("catherine", "cathy", "kate", "katie"),
    ("katherine", "kathy", "kate", "katie"),
    ("kathryn", "kathy", "kate", "katie"),
    ("alexander", "alex", "sasha"),
    ("benjamin", "ben", "benny"),
    ("samuel", "sam", "sammy"),
    ("nicholas", "nick", "nicky"),
    ("jonathan", "jon", "jonny"),
    ("john", "jack", "johnny"),
    ("barbara", "barb", "babs"),
    ("dorothy", "dot", "dottie"),
    ("victoria", "vicky", "tori"),
    ("zachary", "zach", "zack"),
    ("nathaniel", "nate", "nat"),
    ("nathan", "nate"),
    ("frederick", "fred", "freddie"),
    ("gerald", "jerry"),
    ("lawrence", "larry"),
    ("leonard", "len", "lenny"),
    ("raymond", "ray"),
    ("donald", "don", "donnie"),
    ("douglas", "doug"),
    ("peter", "pete"),
    ("philip", "phil"),
    ("samantha", "sam", "sammy"),
    ("abigail", "abby"),
    ("pamela", "pam"),
    ("cynthia", "cindy"),
    ("sandra", "sandy"),
    ("melissa", "mel", "missy"),
    ("amanda", "mandy"),
    ("jessica", "jess", "jessie"),
    ("nancy", "nan"),
    ("christine", "chris", "chrissy"),
    ("jacqueline", "jackie"),
    ("theodore", "ted", "teddy", "theo"),
    ("albert", "al", "bert"),
    ("alfred", "alf", "fred"),
    ("harold", "harry", "hal"),
    ("henry", "harry", "hank"),
    ("francis", "frank"),
    ("frances", "fran", "frankie"),
    ("eugene", "gene"),
    ("walter", "walt"),
)
_NICKNAMES: dict[str, set[str]] = {}
for _group in NICKNAME_GROUPS:
    for _name in _group:
        _NICKNAMES.setdefault(_name, set()).update(_group)

ORGANISATION = re.compile(
    r"(?i)\b(l\.?l\.?c|l\.?l\.?p|inc|ltd|limited|corp|corporation|company|co|gmbh|s\.?a|plc|pty|"
    r"consulting|partners|studio|solutions|advisory|enterprises?|group|holdings|services|associates|agency)\b\.?"
)


def fold(text: str) -> str:
    """Lowercase, accents removed, punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[\u2019'`.]", "", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def looks_like_organisation(printed: str) -> bool:
    return bool(ORGANISATION.search(printed))


@dataclass(frozen=True, kw_only=True)
class Person:
    employee_id: str
    first_name: str
    last_name: str
    middle_name: str = ""
    preferred_name: str | None = None

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    employee_id: str
    name: str
    score: float


@dataclass(frozen=True, kw_only=True)
class Resolution:
    printed_name: str
    employee_id: str | None  # None: needs review
    employee_name: str | None
    method: str  # llc | employee_id | exact | nickname | fuzzy | review
    score: float
    reason: str
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return self.employee_id is not None


@dataclass(frozen=True, kw_only=True)
class _Parsed:
    first: str
    middle: str
    last: str


def parse_printed(printed: str) -> list[_Parsed]:
    """Readings of a printed name, most likely first. Natural order is also read as "first word, then
    the family name" so that particles (O Ceallaigh, De la Cruz) are not taken for middle initials."""
    name = HumanName(printed)
    first, middle, last = fold(name.first), fold(name.middle), fold(name.last)
    if not last and first and "," not in printed:  # a single word: a surname or a given name, unknown
        return [_Parsed(first="", middle="", last=first)]
    readings = [_Parsed(first=first, middle=middle, last=last)]
    words = fold(printed).split()
    if "," not in printed and len(words) >= 3:
        readings.append(_Parsed(first=words[0], middle="", last=" ".join(words[1:])))
    return readings


_KINDS = {0: "fuzzy", 1: "nickname", 2: "exact"}


class NameResolver:
    """Resolves printed names against one tenant's directory and LLC mapping."""

    def __init__(
        self,
        people: Iterable[Person],
        llc_mapping: Mapping[str, str],
        threshold: float = 85.0,
        margin: float = 10.0,
    ) -> None:
        self.people = list(people)
        self.by_id = {p.employee_id: p for p in self.people}
        self._position = {p.employee_id: k for k, p in enumerate(self.people)}
        self.llc = {fold(name): employee_id for name, employee_id in llc_mapping.items()}
        self.threshold = threshold
        self.margin = margin
        self._firsts = [fold(p.first_name) for p in self.people]
        self._lasts = [fold(p.last_name).replace(" ", "") for p in self.people]
        self._middles = np.array([fold(p.middle_name)[:1] for p in self.people])
        # Given names that count as exact (the name itself, the preferred name) or as a nickname.
        self._exact_first: dict[str, set[int]] = {}
        self._nickname_first: dict[str, set[int]] = {}
        for index, person in enumerate(self.people):
            first, preferred = fold(person.first_name), fold(person.preferred_name or "")
            self._exact_first.setdefault(first, set()).add(index)
            if preferred:
                self._nickname_first.setdefault(preferred, set()).add(index)
            for name in _NICKNAMES.get(first, set()) | _NICKNAMES.get(preferred, set()):
                self._nickname_first.setdefault(name, set()).add(index)

    # -- scoring: every person at once (rapidfuzz's C loops), so a large directory stays fast -------

    def _scores(self, parsed: _Parsed) -> tuple[np.ndarray, np.ndarray]:
        """Scores 0-100 for every person, and whether the given name matched exactly (2), as a nickname
        or preferred name (1), or only fuzzily (0)."""
        n = len(self.people)
        last = process.cdist([parsed.last.replace(" ", "")], self._lasts, scorer=fuzz.ratio, workers=1)[0]
        kind = np.zeros(n, dtype=np.int8)
        if not parsed.first:
            first = np.zeros(n)
        elif len(parsed.first) == 1:
            first = np.array([80.0 if f.startswith(parsed.first) else 0.0 for f in self._firsts])
        else:
            first = process.cdist([parsed.first], self._firsts, scorer=fuzz.ratio, workers=1)[0].astype(float)
            nick = list(self._nickname_first.get(parsed.first, ()))
            exact = list(self._exact_first.get(parsed.first, ()))
            first[nick] = 100.0
            kind[nick] = 1
            first[exact] = 100.0
            kind[exact] = 2
        score = 0.5 * last.astype(float) + 0.5 * first
        if parsed.middle:
            conflict = (self._middles != "") & (self._middles != parsed.middle[0])
            score[conflict] -= 15
        kind[last < 100] = 0
        return score, kind

    # -- resolution ---------------------------------------------------------------------------

    def resolve(self, printed_name: str, printed_id: str | None = None) -> Resolution:
        printed = " ".join(printed_name.split())
        if looks_like_organisation(printed):
            return self._resolve_organisation(printed)
        if not self.people:  # a tenant whose directory was never synced: every payee waits for a person
            return _review(printed, 0.0, "the tenant's employee directory is empty")
        readings = parse_printed(printed)
        ranking = self._rank(readings)
        if printed_id and printed_id in self.by_id:
            return self._by_printed_id(printed, printed_id, readings[0], ranking)
        if not readings[0].first:
            return _review(printed, 0.0, "only one name is printed; a surname alone never resolves", ranking.candidates)
        return self._by_name(printed, ranking)

    def _rank(self, readings: list[_Parsed]) -> _Ranking:
        """Every person scored against the best of the readings, and the top five."""
        score, kind = self._scores(readings[0])
        for reading in readings[1:]:
            other_score, other_kind = self._scores(reading)
            better = other_score > score
            score, kind = np.where(better, other_score, score), np.where(better, other_kind, kind)
        order = np.argsort(-score, kind="stable")
        top = [_Scored(score=float(score[i]), kind=_KINDS[int(kind[i])], person=self.people[int(i)]) for i in order[:5]]
        return _Ranking(score=score, kind=kind, top=top)

    def _by_printed_id(self, printed: str, printed_id: str, parsed: _Parsed, ranking: _Ranking) -> Resolution:
        """A printed employee id decides, unless the printed name says it is someone else's."""
        person = self.by_id[printed_id]
        id_score = float(ranking.score[self._position[printed_id]])
        other = next((s for s in ranking.top if s.person.employee_id != printed_id), None)
        if parsed.first and other is not None and other.score >= self.threshold and other.score > id_score + 5:
            return _review(
                printed,
                round(id_score, 1),
                f"printed employee id {printed_id} belongs to {person.display_name}, "
                f"but the name reads as {other.person.display_name}",
                ranking.candidates,
            )
        if id_score >= 70 or not parsed.first:
            return _resolved(printed, person, "employee_id", round(id_score, 1), f"printed employee id {printed_id}")
        return _review(
            printed,
            round(id_score, 1),
            f"printed employee id {printed_id} belongs to {person.display_name}, not to {printed!r}",
            ranking.candidates,
        )

    def _by_name(self, printed: str, ranking: _Ranking) -> Resolution:
        """Given and family name: one exact (or nickname) match, or a fuzzy one clear of the runner-up."""
        best = ranking.top[0]
        runner_up = ranking.top[1].score if len(ranking.top) > 1 else 0.0
        sharing = ranking.exact_matches()
        if best.kind in ("exact", "nickname") and best.score >= 100 and sharing == 1:
            return _resolved(printed, best.person, best.kind, best.score, f"{best.kind} match on given and family name")
        if sharing > 1:
            return _review(printed, best.score, f"{sharing} employees share this name", ranking.candidates)
        if best.score >= self.threshold and best.score - runner_up >= self.margin:
            return _resolved(
                printed,
                best.person,
                "fuzzy",
                round(best.score, 1),
                f"fuzzy match {best.score:.0f} (runner-up {runner_up:.0f})",
            )
        reason = (
            f"best match {best.person.display_name} scores {best.score:.0f}, below {self.threshold:.0f}"
            if best.score < self.threshold
            else f"{best.person.display_name} ({best.score:.0f}) is too close to the runner-up ({runner_up:.0f})"
        )
        return _review(printed, round(best.score, 1), reason, ranking.candidates)

    def _resolve_organisation(self, printed: str) -> Resolution:
        key = fold(printed)
        employee_id = self.llc.get(key)
        if employee_id is None:
            # Printed with a prefix or suffix ("Contractor - NM Studio LLC"): the mapped name inside it.
            inside = [(name, eid) for name, eid in self.llc.items() if re.search(rf"\b{re.escape(name)}\b", key)]
            if len(inside) == 1:
                employee_id = inside[0][1]
        if employee_id is None or employee_id not in self.by_id:
            return _review(
                printed, 0.0, "an organisation not in the LLC mapping (companies are never fuzzy-matched to people)"
            )
        return _resolved(printed, self.by_id[employee_id], "llc", 100.0, "LLC mapping")


@dataclass(frozen=True, kw_only=True)
class _Scored:
    score: float  # 0-100
    kind: str  # exact | nickname | fuzzy: how the given name matched
    person: Person


@dataclass(frozen=True, kw_only=True)
class _Ranking:
    """Every person's score for one printed name, and the five best."""

    score: np.ndarray
    kind: np.ndarray  # 2 exact, 1 nickname, 0 fuzzy
    top: list[_Scored]

    @property
    def candidates(self) -> list[Candidate]:
        return [
            Candidate(employee_id=s.person.employee_id, name=s.person.display_name, score=round(s.score, 1))
            for s in self.top[:3]
        ]

    def exact_matches(self) -> int:
        """How many people the name matches exactly (or by nickname)."""
        in_top = sum(1 for s in self.top if s.kind in ("exact", "nickname") and s.score >= 100)
        if in_top < len(self.top):
            return in_top
        # More may share the name than the top five shows.
        return max(in_top, int(((self.score >= 100) & (self.kind > 0)).sum()))


def _review(printed: str, score: float, reason: str, candidates: list[Candidate] | None = None) -> Resolution:
    """Not resolved: a person decides, with these candidates."""
    return Resolution(
        printed_name=printed,
        employee_id=None,
        employee_name=None,
        method="review",
        score=score,
        reason=reason,
        candidates=candidates or [],
    )


def _resolved(printed: str, person: Person, method: str, score: float, reason: str) -> Resolution:
    return Resolution(
        printed_name=printed,
        employee_id=person.employee_id,
        employee_name=person.display_name,
        method=method,
        score=score,
        reason=reason,
    )
