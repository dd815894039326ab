"""A database of its own on the benchmark server, for benchmarks whose worlds would clash with the
others' (they share system names)."""

from __future__ import annotations

import os
from collections.abc import Callable


def run_in_own_database(name: str, body: Callable[[], None]) -> None:
    """`body` with CLAY_DATABASE_NAME set to `name`; the previous value restored afterwards."""
    previous = os.environ.get("CLAY_DATABASE_NAME")
    os.environ["CLAY_DATABASE_NAME"] = name
    try:
        body()
    finally:
        if previous is None:
            os.environ.pop("CLAY_DATABASE_NAME", None)
        else:
            os.environ["CLAY_DATABASE_NAME"] = previous
