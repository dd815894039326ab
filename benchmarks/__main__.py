"""`make bench`: run every benchmark against a throwaway embedded PostgreSQL."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="clay-bench-"))
    os.environ["CLAY_STATE_DIR"] = str(state)
    os.environ.pop("DATABASE_URL", None)
    from benchmarks import bench_payroll_extraction, bench_payroll_files, bench_payroll_names, bench_world_load
    from clay_pipelines import settings
    from clay_pipelines.db import embedded

    try:
        bench_world_load.run()
        bench_payroll_extraction.run()
        bench_payroll_names.run()
        bench_payroll_files.run()
    finally:
        embedded.stop(settings.pgdata_dir())
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
