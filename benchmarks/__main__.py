"""`make bench`: run every benchmark against a throwaway embedded PostgreSQL.

`python -m benchmarks NAME ...` runs only the named ones (e.g. `routing_scale`)."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

BENCHMARKS = (
    "world_load",
    "payroll_extraction",
    "payroll_names",
    "payroll_files",
    "routing_embeddings",
    "routing_scale",
    "dream_replay",
    "dream_cycle",
    "lifecycle",
    "governance",
    "celery_backfill",
)


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    state = Path(tempfile.mkdtemp(prefix="clay-bench-"))
    os.environ["CLAY_STATE_DIR"] = str(state)
    os.environ.pop("DATABASE_URL", None)
    from clay_pipelines import settings
    from clay_pipelines.db import embedded

    try:
        for name in argv or BENCHMARKS:
            importlib.import_module(f"benchmarks.bench_{name}").run()
            print(flush=True)
    finally:
        embedded.stop(settings.pgdata_dir())
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
