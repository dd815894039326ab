"""Name resolution: precision and recall on the labelled set, and resolutions per second against a
10,000-person directory, with a plain rapidfuzz best-match over full names as the baseline."""

from __future__ import annotations

import time

import numpy as np
from rapidfuzz import fuzz, process

from clay_pipelines.payroll.names import NameResolver, Person
from clay_pipelines.sample_world.payroll_docs import FIRST_NAMES, LAST_NAMES, generate_directory
from tests.name_variants import CASES

QUERIES = 200


def _labelled() -> tuple[float, float, int]:
    directory = generate_directory(7)
    resolver = NameResolver(
        [
            Person(
                employee_id=e.id,
                first_name=e.first_name,
                last_name=e.last_name,
                middle_name=e.middle_name,
                preferred_name=e.preferred_name,
            )
            for e in directory
        ],
        {e.llc: e.id for e in directory if e.llc},
    )
    by_name = {(e.first_name, e.last_name): e.id for e in directory}
    llc = {e.llc: e.id for e in directory if e.llc}
    true_positive = false_positive = positives = 0
    for printed, printed_id, who in CASES:
        expected = None if who is None else (llc[who] if isinstance(who, str) else by_name[who])
        got = resolver.resolve(printed, printed_id).employee_id
        positives += expected is not None
        if got is not None:
            true_positive += got == expected
            false_positive += got != expected
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 1.0
    return precision, true_positive / positives, false_positive


def run() -> None:
    precision, recall, wrong = _labelled()
    print(f"name resolution, labelled set of {len(CASES)} variants:")
    print(f"  precision {precision:.3f}  recall {recall:.3f}  wrong matches {wrong}")

    rng = np.random.default_rng(3)
    people = [
        Person(
            employee_id=str(100000 + k),
            first_name=FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))],
            last_name=LAST_NAMES[int(rng.integers(len(LAST_NAMES)))] + ("" if k < 2000 else str(k % 997)),
        )
        for k in range(10_000)
    ]
    resolver = NameResolver(people, {})
    queries = [
        f"{people[int(i)].last_name.upper()}, {people[int(i)].first_name.upper()}"
        for i in rng.integers(0, len(people), QUERIES)
    ]
    full_names = [p.display_name for p in people]

    started = time.perf_counter()
    for query in queries:
        process.extractOne(query, full_names, scorer=fuzz.WRatio)
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    for query in queries:
        resolver.resolve(query)
    ours = time.perf_counter() - started
    print(
        f"  10,000-person directory: {QUERIES / ours:,.0f} resolutions/s; rapidfuzz extractOne baseline "
        f"{QUERIES / baseline:,.0f}/s; ratio {ours / baseline:.1f}x its time"
    )
