"""`clay db backup|restore`: the platform database and Dagster's, dumped together and restored whole.

clay db backup PATH              a new folder: platform.dump, dagster.dump, manifest.json
clay db restore PATH [--force]   checks the manifest, then replaces both databases
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def cmd_db_backup(args: argparse.Namespace) -> int:
    from clay_pipelines.cli import _say
    from clay_pipelines.db.backup import backup, site_for
    from clay_pipelines.db.targets import resolve_target

    started = time.monotonic()
    target = resolve_target()
    summary = backup(site_for(target), args.path, progress=_say)
    _say(f"backup of {target.description} at {_version(summary)} in {summary.path} ({_since(started)}):")
    _say_parts(summary)
    return 0


def cmd_db_restore(args: argparse.Namespace) -> int:
    from clay_pipelines.cli import _say
    from clay_pipelines.db.backup import restore, site_for
    from clay_pipelines.db.targets import resolve_target

    started = time.monotonic()
    target = resolve_target()
    summary = restore(site_for(target), args.path, force=args.force, progress=_say)
    if summary.created_roles:
        _say(f"created roles the server lacked (set their passwords): {', '.join(summary.created_roles)}")
    _say(f"restored {summary.path} ({_version(summary)}) into {target.description} ({_since(started)}):")
    _say_parts(summary)
    return 0


def _version(summary: Any) -> str:
    return f"migration {summary.migration_version:03d}" if summary.migration_version else "no migrations"


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


def _say_parts(summary: Any) -> None:
    from clay_pipelines.cli import _say
    from clay_pipelines.db.backup import summary_lines

    for line in summary_lines(summary.parts):
        _say(line)


def register(db_commands: argparse._SubParsersAction) -> None:
    backup = db_commands.add_parser("backup", help="dump the platform database and Dagster's into a new folder")
    backup.add_argument("path", type=Path, metavar="PATH", help="the backup folder to create (new or empty)")
    backup.set_defaults(handler=cmd_db_backup)
    restore = db_commands.add_parser("restore", help="replace both databases with a backup made by `clay db backup`")
    restore.add_argument("path", type=Path, metavar="PATH", help="the backup folder")
    restore.add_argument("--force", action="store_true", help="replace databases that are not empty")
    restore.set_defaults(handler=cmd_db_restore)
