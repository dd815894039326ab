"""`clay executions show|erase`, `clay hold place|release|list`, `clay archive restore`, `clay lifecycle policy`.

clay executions show ID [--tenant T] [--json]                    an access: recorded, applied by the lifecycle
clay executions erase ID [ID ...] --tenant T --by EMAIL --reason TEXT
clay hold place --tenant T (--all | --system NAME | --from TS --to TS | --executions ID ...) --by EMAIL --reason TEXT
clay hold release HOLD --tenant T --by EMAIL [--reason TEXT]
clay hold list --tenant T [--all] [--json]
clay archive restore (ID ... | --archive ARCHIVE) --tenant T [--by EMAIL]
clay lifecycle policy show [--tenant T] [--json]
clay lifecycle policy set --tenant T [--warm-days N] [--cold-days N] [--archive-days N] [--retention-years N] [--by EMAIL]

The `executions` group is shared: add_execution_commands() returns it, creating it when missing, so
other modules add their own subcommands to it.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from clay_pipelines.errors import EXIT_BAD_INPUT, CommandError


def _cli():
    from clay_pipelines import cli

    return cli


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a UUID)") from error


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or timestamp") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # boundaries are UTC


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="what", required=True, metavar="WHAT")


def add_execution_commands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `executions` group's subcommands (created on first call), with show and erase added."""
    group = commands.choices.get("executions") or commands.add_parser("executions", help="executions: show, erase, ...")
    executions = _subcommands(group)
    if "show" not in executions.choices:
        show = executions.add_parser("show", help="one execution, whatever its lifecycle state (an access)")
        show.add_argument("execution", type=_uuid, metavar="ID")
        show.add_argument("--tenant", default=None, help="the tenant (default: the execution's)")
        show.add_argument("--json", action="store_true")
        show.set_defaults(handler=cmd_show)
    if "erase" not in executions.choices:
        erase = executions.add_parser("erase", help="erase executions' content from every state, archives included")
        erase.add_argument("executions", type=_uuid, nargs="+", metavar="ID")
        erase.add_argument("--tenant", required=True)
        erase.add_argument("--by", required=True, metavar="EMAIL")
        erase.add_argument("--reason", required=True)
        erase.set_defaults(handler=cmd_erase)
    return executions


def register(commands: argparse._SubParsersAction) -> None:
    add_execution_commands(commands)
    hold = commands.add_parser("hold", help="legal holds: place, release, list")
    hold_commands = hold.add_subparsers(dest="what", required=True, metavar="WHAT")
    place = hold_commands.add_parser("place", help="place a legal hold")
    place.add_argument("--tenant", required=True)
    scope = place.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="the whole tenant")
    scope.add_argument("--system", help="every execution of this system")
    scope.add_argument("--from", dest="range_start", type=_timestamp, help="executions started from (UTC)")
    scope.add_argument("--executions", type=_uuid, nargs="+", metavar="ID")
    place.add_argument("--to", dest="range_end", type=_timestamp, help="... until, excluded (with --from)")
    place.add_argument("--by", required=True, metavar="EMAIL")
    place.add_argument("--reason", required=True)
    place.set_defaults(handler=cmd_hold_place)
    release = hold_commands.add_parser("release", help="release a legal hold")
    release.add_argument("hold", type=_uuid, metavar="HOLD")
    release.add_argument("--tenant", required=True)
    release.add_argument("--by", required=True, metavar="EMAIL")
    release.add_argument("--reason", default="")
    release.set_defaults(handler=cmd_hold_release)
    listing = hold_commands.add_parser("list", help="the tenant's holds (in force unless --all)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_hold_list)
    archive = commands.add_parser("archive", help="lifecycle archives: restore")
    archive_commands = archive.add_subparsers(dest="what", required=True, metavar="WHAT")
    restore = archive_commands.add_parser("restore", help="bring archived executions back")
    restore.add_argument("executions", type=_uuid, nargs="*", metavar="ID")
    restore.add_argument("--archive", type=_uuid, default=None)
    restore.add_argument("--tenant", required=True)
    restore.add_argument("--by", default="clay-cli", metavar="EMAIL")
    restore.set_defaults(handler=cmd_archive_restore)
    _register_policy(commands)


# Option -> lifecycle_policies column.
_POLICY_OPTIONS = {
    "warm_days": "warm_after_days",
    "cold_days": "cold_after_days",
    "archive_days": "archive_after_days",
    "retention_years": "retention_years",
}


def _register_policy(commands: argparse._SubParsersAction) -> None:
    lifecycle = commands.add_parser("lifecycle", help="lifecycle thresholds per tenant: policy show, policy set")
    group = lifecycle.add_subparsers(dest="what", required=True, metavar="WHAT")
    policy = group.add_parser("policy", help="a tenant's aging and retention thresholds")
    policy_commands = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = policy_commands.add_parser("show", help="the thresholds of one tenant, or of every tenant")
    show.add_argument("--tenant", default=None, help="one tenant (default: every tenant)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_policy_show)
    change = policy_commands.add_parser(
        "set", help="keep a tenant's data longer (never shorter than the platform's legal minimum)"
    )
    change.add_argument("--tenant", required=True)
    change.add_argument("--warm-days", type=int, help="days without access before WARM (at least 30)")
    change.add_argument("--cold-days", type=int, help="days without access before COLD (at least 90)")
    change.add_argument("--archive-days", type=int, help="days without access before ARCHIVED (at least 365)")
    change.add_argument(
        "--retention-years", "--prune-years", type=int, help="years an archive is kept before PRUNED (at least 7)"
    )
    change.add_argument("--by", default="clay-cli", metavar="EMAIL")
    change.set_defaults(handler=cmd_policy_set)


# ---------------------------------------------------------------------------------------------


def _execution_tenant(db: Any, execution_id: UUID) -> UUID:
    from clay_pipelines.db import MaintenanceJob

    with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
        row = conn.execute("SELECT tenant_id FROM executions WHERE id = %s", (execution_id,)).fetchone()
    if row is None:
        raise CommandError(f"no execution {execution_id}", EXIT_BAD_INPUT)
    return row[0]


_SHOW = """
SELECT e.id, t.name, e.system_name, e.status, e.lifecycle_state, e.user_request,
       coalesce(e.input_data, c.input_data), coalesce(e.output_data, c.output_data),
       coalesce(e.user_feedback, c.user_feedback), coalesce(e.suggested_improvements, c.suggested_improvements),
       e.governance_check, e.started_at, e.completed_at, e.duration_ms, e.cost_usd, e.user_satisfaction,
       e.receipt_signature, e.last_accessed_at, e.access_count, e.archive_id, e.content_erased_at
FROM executions e JOIN tenants t ON t.id = e.tenant_id
LEFT JOIN execution_cold_content c ON c.execution_id = e.id
WHERE e.id = %s
"""
_FIELDS = (
    "id", "tenant", "system_name", "status", "lifecycle_state", "user_request", "input_data", "output_data",
    "user_feedback", "suggested_improvements", "governance_check", "started_at", "completed_at", "duration_ms",
    "cost_usd", "user_satisfaction", "receipt_signature", "last_accessed_at", "access_count", "archive_id",
    "content_erased_at",
)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "as_integer_ratio") and not isinstance(value, int | float):
        return str(value)  # Decimal, exact
    return value


def cmd_show(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle.access import record_access

    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant) if args.tenant else _execution_tenant(db, args.execution)
        with db.tenant_transaction(tenant_id) as conn:
            row = conn.execute(_SHOW, (args.execution,)).fetchone()
            if row is None:
                raise CommandError(f"no execution {args.execution} in this tenant", EXIT_BAD_INPUT)
            record_access(conn, args.execution, "show")
    shown = {k: _plain(v) for k, v in zip(_FIELDS, row, strict=True)}
    if args.json:
        _cli()._say(json.dumps(shown, indent=2, sort_keys=False, default=str))
        return 0
    for key, value in shown.items():
        _cli()._say(f"{key:>24}  {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")
    if shown["lifecycle_state"] == "ARCHIVED":
        _cli()._say(f"archived: bring it back with `clay archive restore {args.execution} --tenant {shown['tenant']}`")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle.archive import ArchiveStore
    from clay_pipelines.lifecycle.erasure import ErasureError, erase
    from clay_pipelines.lifecycle.policy import archive_url

    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            by_state = erase(
                db, tenant_id, args.executions, ArchiveStore(archive_url()), by=args.by, reason=args.reason
            )
        except ErasureError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
    _cli()._say(f"erased the content of {len(args.executions)} execution(s) ({states}); counts and receipts kept")
    return 0


def cmd_hold_place(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle import holds

    if args.range_start is not None and args.range_end is None:
        raise CommandError("--from needs --to", EXIT_BAD_INPUT)
    if args.range_end is not None and args.range_start is None:
        raise CommandError("--to needs --from", EXIT_BAD_INPUT)
    scope = "tenant" if args.all else "system" if args.system else "time_range" if args.range_start else "executions"
    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                hold_id = holds.place(
                    conn, scope=scope, reason=args.reason, placed_by=args.by, system=args.system,
                    range_start=args.range_start, range_end=args.range_end, execution_ids=args.executions,
                )  # fmt: skip
        except holds.HoldError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _cli()._say(f"legal hold {hold_id} placed ({scope})")
    return 0


def cmd_hold_release(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle import holds

    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                holds.release(conn, args.hold, args.by, args.reason)
        except holds.HoldError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _cli()._say(f"legal hold {args.hold} released")
    return 0


def cmd_hold_list(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle import holds

    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        with db.tenant_transaction(tenant_id) as conn:
            found = holds.holds(conn, in_force_only=not args.all)
    if args.json:
        _cli()._say(json.dumps([{k: _plain(v) for k, v in vars(h).items()} for h in found], indent=2, default=str))
        return 0
    for h in found:
        what = {
            "tenant": "the whole tenant",
            "system": f"system {h.system_name}",
            "time_range": f"started {h.range_start:%Y-%m-%d %H:%M} .. {h.range_end:%Y-%m-%d %H:%M} UTC",
            "executions": f"{len(h.execution_ids or [])} execution(s)",
        }[h.scope]
        state = f"released by {h.released_by}" if h.released_at else "in force"
        _cli()._say(f"{h.id}  {what}  {state}  placed by {h.placed_by} {h.placed_at:%Y-%m-%d}: {h.reason}")
    if not found:
        _cli()._say("no legal holds" + ("" if args.all else " in force"))
    return 0


def cmd_archive_restore(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle.archive import ArchiveError, ArchiveStore, restore
    from clay_pipelines.lifecycle.policy import archive_url

    if not args.executions and not args.archive:
        raise CommandError("name the executions (ID ...) or the archive (--archive ID) to restore", EXIT_BAD_INPUT)
    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            n = restore(
                db, tenant_id, ArchiveStore(archive_url()), execution_ids=args.executions or None,
                archive_id=args.archive, actor=args.by,
            )  # fmt: skip
        except ArchiveError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _cli()._say(f"{n} execution(s) restored")
    return 0


def _policy_line(name: str, thresholds: Any, set_by: str | None) -> str:
    t = thresholds
    origin = f"set by {set_by}" if set_by else "platform defaults"
    return (
        f"{name}: WARM after {t.warm_after_days} days, COLD after {t.cold_after_days} days, "
        f"ARCHIVED after {t.archive_after_days} days, PRUNED {t.retention_years} years after archiving ({origin})"
    )


def cmd_policy_show(args: argparse.Namespace) -> int:
    from clay_pipelines.db import MaintenanceJob
    from clay_pipelines.lifecycle.policy import tenant_policies

    with _cli()._database() as db:
        wanted = db.resolve_tenant(args.tenant) if args.tenant else None
        with db.maintenance_transaction(MaintenanceJob.PLATFORM_ANALYTICS) as conn:
            policies = [p for p in tenant_policies(conn) if wanted is None or p.tenant_id == wanted]
    if args.json:
        body = [{"tenant": p.tenant, **vars(p.thresholds), "set_by": p.set_by} for p in policies]
        _cli()._say(json.dumps(body, indent=2))
        return 0
    for p in policies:
        _cli()._say(_policy_line(p.tenant, p.thresholds, p.set_by))
    return 0


def cmd_policy_set(args: argparse.Namespace) -> int:
    from clay_pipelines.lifecycle.policy import PolicyError, set_tenant_policy

    changes = {column: getattr(args, option) for option, column in _POLICY_OPTIONS.items()}
    changes = {column: value for column, value in changes.items() if value is not None}
    if not changes:
        raise CommandError(
            "nothing to set: give --warm-days, --cold-days, --archive-days or --retention-years", EXIT_BAD_INPUT
        )
    with _cli()._database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                thresholds = set_tenant_policy(conn, changes, by=args.by)
        except PolicyError as error:
            raise CommandError(f"tenant {args.tenant}: {error}", EXIT_BAD_INPUT) from error
        name = db.tenant_names().get(tenant_id, args.tenant)
    _cli()._say(_policy_line(name, thresholds, args.by))
    return 0


def say_states_after_run(assets: list[str]) -> None:
    """After `clay run` aged the executions: each tenant's rows per lifecycle state, one line a tenant."""
    from clay_pipelines.lifecycle.report import state_table

    if "lifecycle/execution_aging" not in assets:
        return
    with _cli()._database() as db:
        rows = state_table(db)
    _cli()._say("executions by lifecycle state (as of now, by last access):")
    for tenant in dict.fromkeys(r.tenant for r in rows):
        states = "  ".join(f"{r.state} {r.rows:,}" for r in rows if r.tenant == tenant)
        _cli()._say(f"  {tenant}: {states}")
