"""`clay executions complete|rate`, `clay receipts verify|sign|rotate-key`, `clay budgets sweep`.

clay executions complete EXECUTION --tenant T --status S [--cost USD] [--output JSON] [--error TEXT]
                         [--completed-at TIMESTAMP]
clay executions rate EXECUTION --tenant T --stars N [--feedback TEXT]
clay receipts verify --tenant T [--since DATE]     exit 1 on a break or an overdue unsigned completion
clay receipts sign [--tenant T]                    sign completed executions now (the asset does it too)
clay receipts rotate-key                           a new signing key; old public keys keep verifying
clay budgets sweep                                 release expired budget reservations of every tenant
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from uuid import UUID

from clay_pipelines import settings
from clay_pipelines.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CommandError


def _cli():
    from clay_pipelines import cli

    return cli


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as error:
        raise CommandError(f"EXECUTION must be an execution id (a UUID), got {text!r}", EXIT_BAD_INPUT) from error


def cmd_complete(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import completion, keys

    try:
        cost = None if args.cost is None else Decimal(args.cost)
    except InvalidOperation as error:
        raise CommandError(f"--cost must be a decimal amount of USD, got {args.cost!r}", EXIT_BAD_INPUT) from error
    try:
        output = None if args.output is None else json.loads(args.output)
    except json.JSONDecodeError as error:
        raise CommandError(f"--output is not JSON: {error}", EXIT_BAD_INPUT) from error
    completed_at = None if args.completed_at is None else _timestamp(args.completed_at)
    with _cli()._database() as db:
        tenant = db.resolve_tenant(args.tenant)
        signing = keys.signer()
        with db.unscoped_transaction() as conn:
            keys.register(conn, signing)
        done = completion.complete(
            db,
            tenant,
            _uuid(args.execution),
            args.status,
            signer=signing,
            output=output,
            cost_usd=cost,
            completed_at=completed_at,
            error_message=args.error,
        )
    what = "completed" if done.changed else "already completed with these values: nothing changed"
    settled = ", budget reservation settled" if done.reservation_settled else ""
    signed = ", receipt signed" if done.signed else ""
    _cli()._say(f"execution {done.execution_id} {what}{settled}{signed}")
    return 0


def cmd_rate(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import completion

    with _cli()._database() as db:
        tenant = db.resolve_tenant(args.tenant)
        with db.tenant_transaction(tenant) as conn:
            recorded = completion.rate_execution(conn, _uuid(args.execution), args.stars, args.feedback)
    _cli()._say(f"execution {args.execution}: " + ("rated" if recorded else "already rated so: nothing changed"))
    return 0


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"--completed-at is not an ISO timestamp: {text!r}", EXIT_BAD_INPUT) from error
    if value.tzinfo is None:
        raise CommandError(f"--completed-at needs a time zone (e.g. {text}+00:00)", EXIT_BAD_INPUT)
    return value


def cmd_verify(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import receipts

    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError as error:
            raise CommandError(f"--since is not a date (YYYY-MM-DD): {args.since!r}", EXIT_BAD_INPUT) from error
    with _cli()._database() as db:
        tenant = db.resolve_tenant(args.tenant)
        with db.tenant_transaction(tenant) as conn:
            report = receipts.verify_chain(
                conn,
                tenant,
                checkpoint_folder=settings.receipt_checkpoint_dir(),
                since=since,
                pending_limit=timedelta(minutes=settings.receipt_pending_limit_minutes()),
            )
    say = _cli()._say
    say(f"{report.receipts} receipts checked for tenant {args.tenant}")
    if report.checkpoint:
        checkpoint = report.checkpoint
        say(f"  latest checkpoint: {checkpoint.length} receipts at {checkpoint.created_at:%Y-%m-%d %H:%M} UTC")
    for line in report.breaks:
        say(f"  BREAK: {line}")
    if report.pending:
        say(f"  pending: {report.pending} completed executions not signed yet (oldest {report.oldest_pending})")
    if report.overdue:
        say(f"  OVERDUE: {report.overdue} unsigned for more than {settings.receipt_pending_limit_minutes()} minutes")
    if report.awaiting_approval:
        say(f"  awaiting an ARM decision (signed once decided): {report.awaiting_approval}")
    say("chain verifies" if report.ok else "chain does NOT verify")
    return 0 if report.ok else EXIT_FAILURE


def cmd_sign(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import keys, receipts

    signing = keys.signer()
    total = 0
    with _cli()._database() as db:
        with db.unscoped_transaction() as conn:
            keys.register(conn, signing)
        tenants = [db.resolve_tenant(args.tenant)] if args.tenant else db.tenant_ids()
        for tenant in tenants:
            while True:
                with db.tenant_transaction(tenant) as conn:
                    signed = receipts.sign_pending(conn, tenant, signing)
                total += signed
                if signed < receipts.BATCH:
                    break
    _cli()._say(f"{total} receipts signed with key {signing.key_id}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import keys

    if settings.receipt_signer_hook():
        raise CommandError("CLAY_RECEIPT_SIGNER is set: rotate the key in the signer it names", EXIT_BAD_INPUT)
    signing = keys.rotate()
    with _cli()._database() as db, db.unscoped_transaction() as conn:
        keys.register(conn, signing)
        retired = keys.retire_others(conn, signing.key_id)
    _cli()._say(f"new receipt key {signing.key_id}; {retired} older key(s) retired (they still verify)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from clay_pipelines.governance import budgets

    released = 0
    with _cli()._database() as db:
        for tenant in db.tenant_ids():
            with db.tenant_transaction(tenant) as conn:
                released += budgets.expire_reservations(conn)
    _cli()._say(f"{released} expired budget reservation(s) released")
    return 0


def executions_commands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `executions` group's subcommands, the group created if no other module made it yet."""
    parser = commands.choices.get("executions")
    if parser is None:
        parser = commands.add_parser("executions", help="executions: complete, rate (and the lifecycle's commands)")
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="executions_command", required=True, metavar="COMMAND")


def register(commands: argparse._SubParsersAction) -> None:
    group = executions_commands(commands)
    complete = group.add_parser("complete", help="report an execution's outcome (once; settles its budget)")
    complete.add_argument("execution", metavar="EXECUTION")
    complete.add_argument("--tenant", required=True)
    complete.add_argument(
        "--status", required=True, choices=["success", "failed", "partial", "timeout", "governance_blocked"]
    )
    complete.add_argument("--cost", help="actual cost in USD")
    complete.add_argument("--output", help="output as JSON")
    complete.add_argument("--error", help="error message")
    complete.add_argument("--completed-at", help="ISO timestamp with a time zone (default: now)")
    complete.set_defaults(handler=cmd_complete)
    rate = group.add_parser("rate", help="a person's 1-5 stars on a completed execution (once)")
    rate.add_argument("execution", metavar="EXECUTION")
    rate.add_argument("--tenant", required=True)
    rate.add_argument("--stars", required=True, type=int, choices=range(1, 6))
    rate.add_argument("--feedback")
    rate.set_defaults(handler=cmd_rate)

    receipts_parser = commands.add_parser("receipts", help="signed execution receipts: verify, sign, rotate-key")
    receipts_commands = receipts_parser.add_subparsers(dest="receipts_command", required=True, metavar="COMMAND")
    verify = receipts_commands.add_parser("verify", help="check a tenant's receipt chain; exit 1 on any break")
    verify.add_argument("--tenant", required=True)
    verify.add_argument("--since", help="YYYY-MM-DD: receipts of executions completed from that day")
    verify.set_defaults(handler=cmd_verify)
    sign = receipts_commands.add_parser("sign", help="sign completed executions now")
    sign.add_argument("--tenant")
    sign.set_defaults(handler=cmd_sign)
    receipts_commands.add_parser("rotate-key", help="a new signing key").set_defaults(handler=cmd_rotate)

    budgets_parser = commands.add_parser("budgets", help="budget reservations: sweep")
    budgets_commands = budgets_parser.add_subparsers(dest="budgets_command", required=True, metavar="COMMAND")
    budgets_commands.add_parser("sweep", help="release expired reservations").set_defaults(handler=cmd_sweep)
