"""Inside a new mount namespace (`unshare --mount --propagation private`): hide folders, keep some.

    python -m clay_pipelines.deploy.isolate --hide DIR ... --share DIR ... -- COMMAND ...

Each hidden folder is covered by an empty tmpfs, except the shared folders inside it, which are bound
back in place (set aside first, since covering their parent hides them too); then this process
becomes COMMAND. The worker so sees the storage it must share (the payroll inbox, the signing keys,
the archive, the step logs) and not the database's files, its socket, Redis's folder or the
deployment's secrets. Mounts made here are invisible outside the namespace and end with it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def outermost(folders: Sequence[Path]) -> list[Path]:
    """The folders not inside another of them (a folder inside a covered one is covered with it)."""
    ordered = sorted({f.resolve() for f in folders}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for folder in ordered:
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return kept


def _mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True, text=True)


def isolate(hidden: Sequence[Path], shared: Sequence[Path]) -> None:
    covered = outermost(hidden)
    kept = [s.resolve() for s in shared if any(s.resolve().is_relative_to(c) for c in covered)]
    stage = Path(tempfile.mkdtemp(prefix="clay-stage-"))  # a host folder, used only as a mount point here
    try:
        aside = []
        for index, folder in enumerate(kept):
            folder.mkdir(parents=True, exist_ok=True)
            spot = stage / str(index)
            spot.mkdir()
            _mount("--bind", str(folder), str(spot))
            aside.append(spot)
        for folder in covered:
            _mount("-t", "tmpfs", "-o", "mode=0755,size=64m", "clay-private", str(folder))
        for spot, folder in zip(aside, kept, strict=True):
            folder.mkdir(parents=True, exist_ok=True)
            _mount("--move", str(spot), str(folder))
    finally:
        for spot in stage.iterdir():
            spot.rmdir()
        stage.rmdir()


def main(argv: Sequence[str]) -> None:
    options, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="clay_pipelines.deploy.isolate")
    parser.add_argument("--hide", type=Path, action="append", default=[])
    parser.add_argument("--share", type=Path, action="append", default=[])
    parser.add_argument("--make", type=Path, action="append", default=[], help="folders to create once isolated")
    args = parser.parse_args(options)
    if not command:
        parser.error("a command to run after --")
    isolate(args.hide, args.share)
    for folder in args.make:
        folder.mkdir(parents=True, exist_ok=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
