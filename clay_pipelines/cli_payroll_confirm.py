"""`clay payroll confirm`: a person confirms entries read with low confidence (OCR of a scan).

clay payroll confirm TENANT/FILE --by EMAIL [--entry ENTRY]
"""

from __future__ import annotations

import argparse
from uuid import UUID

from clay_pipelines.errors import EXIT_BAD_INPUT, CommandError


def cmd_payroll_confirm(args: argparse.Namespace) -> int:
    from clay_pipelines.cli import _database, _say, _tenant_and_file
    from clay_pipelines.payroll.approval import ApprovalError, confirm_entries

    entry = None
    if args.entry is not None:
        try:
            entry = UUID(args.entry)
        except ValueError as error:
            raise CommandError(
                f"--entry must be a payroll entry id (a UUID), got {args.entry!r}", EXIT_BAD_INPUT
            ) from error
    with _database() as db:
        tenant_id, source_file = _tenant_and_file(db, args.file, args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                outcome = confirm_entries(conn, source_file, args.by, entry)
        except ApprovalError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _say(
        f"{outcome.source_file} version {outcome.version}: {outcome.confirmed} low-confidence entries confirmed by "
        f"{args.by}; {outcome.released} deliveries no longer wait for review"
        + (f", {outcome.waiting_for_name} still need their payee named" if outcome.waiting_for_name else "")
    )
    return 0


def register(payroll_commands: argparse._SubParsersAction) -> None:
    confirm = payroll_commands.add_parser(
        "confirm", help="confirm entries read with low confidence (OCR of a scan) before any delivery"
    )
    confirm.add_argument("file", metavar="FILE", help="the file name, or TENANT/FILE")
    confirm.add_argument("--by", required=True, help="the confirmer's email")
    confirm.add_argument("--entry", default=None, help="confirm this entry only (its id)")
    confirm.add_argument("--tenant", default=None, help="tenant name, domain or id")
    confirm.set_defaults(handler=cmd_payroll_confirm)
