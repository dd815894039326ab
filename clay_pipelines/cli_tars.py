"""`clay amend`, `clay constitution`, `clay amendments`: constitutions and their amendments.

clay amend SYSTEM --tenant T --set KEY=VALUE ... --by EMAIL --reason TEXT
clay amend SYSTEM --platform --set KEY=VALUE --by EMAIL --reason TEXT      the base, for every tenant
clay constitution show SYSTEM --tenant T [--at TIMESTAMP] [--json]
clay constitution history SYSTEM --tenant T
clay constitution freeze|unfreeze --tenant T --by EMAIL [--reason TEXT]
clay amendments list --tenant T
clay amendments rollback AMENDMENT --tenant T --by EMAIL --reason TEXT
clay amendments pending --tenant T
clay amendments approve PENDING --tenant T --by EMAIL [--reject] [--reason TEXT]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from clay_pipelines.db import MaintenanceJob
from clay_pipelines.errors import EXIT_BAD_INPUT, CommandError
from clay_pipelines.tars import amendments as am
from clay_pipelines.tars import constitution as c


def _cli():
    from clay_pipelines import cli

    return cli


@contextmanager
def _transaction(args: argparse.Namespace) -> Iterator[psycopg.Connection]:
    """The tenant's transaction, or the maintenance role's for --platform (domain refusals become
    one-line errors in cli.main, with every other domain's)."""
    with _cli()._database() as db:
        if getattr(args, "platform", False):
            with db.maintenance_transaction(MaintenanceJob.SYSTEM_ROLLUPS) as conn:
                yield conn
            return
        if not args.tenant:
            raise CommandError("name the tenant: --tenant NAME (or --platform for the base)", EXIT_BAD_INPUT)
        with db.tenant_transaction(db.resolve_tenant(args.tenant)) as conn:
            yield conn


def _value(text: str) -> Any:
    """VALUE as JSON when it is JSON (0.65, true, ["a"], null), else as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _changes(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--set takes KEY=VALUE, got {item!r}", EXIT_BAD_INPUT)
        # A bare parameter name means the parameter: --set routing_confidence_threshold=0.65.
        if "." not in key and key in (current.get("parameters") or {}):
            key = f"parameters.{key}"
        changes[key] = _value(value)
    for list_key, added in (
        ("requires_approval", args.require_approval),
        ("prime_directives", args.add_directive),
        ("capabilities", args.add_capability),
    ):
        if added:
            existing = list(current.get(list_key) or [])
            changes[list_key] = existing + [a for a in added if a not in existing]
    if not changes:
        raise CommandError("nothing to change: give --set, --require-approval, --add-directive or --add-capability")
    return changes


def cmd_amend(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        current = am.effective(conn, args.system)
        amendment = am.amend(
            conn,
            am.Change(
                system=args.system,
                changes=_changes(args, current.constitution),
                by=args.by,
                reason=args.reason,
                amendment_type=args.type,
                expected_hash=args.expect_hash,
            ),
        )
    scope = "the platform base" if amendment.tenant_id is None else "this tenant"
    _cli()._say(
        f"{amendment.system_name}: {amendment.amendment_type} {amendment.id} for {scope}, "
        f"{amendment.old_hash[:12]} -> {amendment.new_hash[:12]}"
        + ("" if amendment.can_rollback else " (cannot be rolled back)")
    )
    for op in amendment.diff:
        _cli()._say(f"  {op['op']} {op['path']}" + (f" = {json.dumps(op['value'])}" if "value" in op else ""))
    if amendment.amendment_type == "capability_expansion" and amendment.tenant_id is None:
        _refresh_capability_embeddings()
    return 0


def _refresh_capability_embeddings() -> None:
    """The router matches by capability embeddings: re-embed the skill now rather than at the next
    system_capability_embeddings run."""
    from clay_pipelines.routing.embed_store import embed_shared_systems

    cli = _cli()
    with cli._database() as db:
        written = embed_shared_systems(db, cli._embedder(None))
    cli._say(f"  capability embeddings refreshed ({written})")


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO timestamp (2026-11-30T12:00:00+00:00): {text!r}") from error
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone too (…+00:00 for UTC): {text!r}")
    return moment


def cmd_constitution_show(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        if args.at is None:
            document = am.effective(conn, args.system).constitution
        else:
            document = am.replay(conn, am.skill(conn, args.system), am.current_tenant(conn), at=args.at)
    if args.json:
        _cli()._say(json.dumps(document, indent=2, sort_keys=True))
        return 0
    when = f" at {args.at.isoformat()}" if args.at else ""
    _cli()._say(f"{args.system}{when}: {c.constitution_hash(document)}")
    _cli()._say(json.dumps(document, indent=2, sort_keys=True))
    return 0


def _amendment_line(a: am.Amendment) -> str:
    scope = "platform" if a.tenant_id is None else "tenant"
    state = f", rolled back {a.rolled_back_at:%Y-%m-%d %H:%M}" if a.rolled_back_at else ""
    paths = ", ".join(sorted(c.touched_paths(a.diff)))
    return (
        f"{a.approved_at:%Y-%m-%d %H:%M}  {a.id}  {scope:<8} {a.system_name:<20} {a.amendment_type:<22} "
        f"by {a.approved_by}{state}: {paths}"
    )


def cmd_constitution_history(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        found = am.skill(conn, args.system)
        history = am.amendments(conn, found.id, am.current_tenant(conn))
    for a in history:
        _cli()._say(_amendment_line(a))
    if not history:
        _cli()._say(f"{args.system}: no amendments; the constitution is the one it was created with")
    return 0


def cmd_constitution_freeze(args: argparse.Namespace) -> int:
    frozen = args.freeze_command == "freeze"
    with _transaction(args) as conn:
        am.set_frozen(conn, frozen, args.by, args.reason)
    _cli()._say("automated changes are " + ("frozen: dreams are evaluated, nothing applies" if frozen else "allowed"))
    return 0


def cmd_amendments_list(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        listed = am.amendments(conn, None, am.current_tenant(conn))
    for a in listed:
        _cli()._say(_amendment_line(a))
    if not listed:
        _cli()._say("no amendments")
    return 0


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an id (a UUID): {text!r}") from error


def cmd_amendments_rollback(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        undo = am.rollback(conn, args.amendment, args.by, args.reason)
    _cli()._say(f"{undo.system_name}: rolled back {args.amendment} with {undo.id}; constitution {undo.new_hash[:12]}")
    return 0


def cmd_amendments_pending(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        waiting = am.pending(conn)
    for p in waiting:
        changes = ", ".join(f"{k}={json.dumps(v)}" for k, v in p["changes"].items())
        _cli()._say(f"{p['proposed_at']:%Y-%m-%d %H:%M}  {p['id']}  {p['system']}: {changes} (by {p['proposed_by']})")
    if not waiting:
        _cli()._say("nothing waits for approval")
    return 0


def cmd_amendments_approve(args: argparse.Namespace) -> int:
    with _transaction(args) as conn:
        outcome = am.decide_pending(conn, args.pending, args.by, approve=not args.reject, reason=args.reason)
    if outcome.status == "stale":
        raise CommandError(
            f"{args.pending}: the constitution changed since this was proposed; marked stale, nothing applied"
        )
    if outcome.amendment is not None:
        _cli()._say(f"approved: amendment {outcome.amendment.id}, constitution {outcome.amendment.new_hash[:12]}")
    else:
        _cli()._say(f"{args.pending}: {outcome.status}")
    return 0


def cmd_dreams_list(args: argparse.Namespace) -> int:
    from clay_pipelines.tars import reports

    with _transaction(args) as conn:
        listed = reports.dreams(conn, cycle_id=args.cycle, pending=args.pending)
    for d in listed:
        changes = ", ".join(f"{k.rsplit('.', 1)[-1]}={json.dumps(v)}" for k, v in d.mutation.items())
        gain = "" if d.gain is None else f"  success {d.gain:+.3f}"
        if d.interval and d.interval[0] is not None and d.interval[1] is not None:
            gain += f" [{d.interval[0]:+.3f}, {d.interval[1]:+.3f}]"
        flag = " (evaluation only)" if d.evaluation_only else ""
        _cli()._say(f"{d.cycle_id}  {d.id}  {d.system_name:<18} {d.status:<16} {changes}{gain}{flag}")
    if not listed:
        _cli()._say("no dreams" + (" waiting for approval" if args.pending else ""))
    return 0


def cmd_dreams_show(args: argparse.Namespace) -> int:
    from clay_pipelines.tars import reports

    with _transaction(args) as conn:
        shown = reports.dream(conn, args.dream)
    _cli()._say(json.dumps(shown, indent=2, default=str, sort_keys=True))
    return 0


def cmd_dreams_approve(args: argparse.Namespace) -> int:
    from clay_pipelines.tars import cycle

    with _transaction(args) as conn:
        status = cycle.approve_dream(conn, args.dream, args.by, approve=not args.reject, reason=args.reason)
    if status == "stale":
        raise CommandError(f"dream {args.dream}: the constitution changed since it was dreamed; marked stale")
    _cli()._say(f"dream {args.dream}: {status}")
    return 0


def cmd_eval_dreams(args: argparse.Namespace) -> int:
    from clay_pipelines.evaluation.dreams import evaluate_dreams

    if args.seeds < 1 or args.bootstrap < 2 or args.workers < 1:
        raise CommandError("--seeds and --workers must be at least 1, --bootstrap at least 2", EXIT_BAD_INPUT)
    figures = evaluate_dreams(seeds=args.seeds, bootstrap=args.bootstrap, workers=args.workers)
    _cli()._say(json.dumps(figures, indent=None if args.json else 2, default=str))
    return 0


def register_eval(evaluations: argparse._SubParsersAction) -> None:
    """`clay eval dreams`: the decision rule on in-memory worlds whose truth is known."""
    dreams = evaluations.add_parser("dreams", help="false and planted promotions, estimate error, interval coverage")
    dreams.add_argument("--seeds", type=int, default=200, help="A/A and planted worlds each (default 200)")
    dreams.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per estimate (default 200)")
    dreams.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    dreams.add_argument("--json", action="store_true", help="one line of JSON")
    dreams.set_defaults(handler=cmd_eval_dreams)


def _tenant_options(parser: argparse.ArgumentParser, platform: bool = False) -> None:
    parser.add_argument("--tenant", default=None, help="tenant name, domain or id")
    if platform:
        parser.add_argument("--platform", action="store_true", help="the platform's base (maintenance role)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the constitution commands to `clay`."""
    amend = commands.add_parser("amend", help="change a skill's constitution (recorded as an amendment)")
    amend.add_argument("system", metavar="SYSTEM", help="the skill's name")
    _tenant_options(amend, platform=True)
    amend.add_argument("--set", action="append", metavar="KEY=VALUE", help="a key (dotted, or a parameter's name)")
    amend.add_argument("--require-approval", action="append", metavar="ACTION", help="add to requires_approval")
    amend.add_argument("--add-directive", action="append", metavar="TEXT", help="add to prime_directives")
    amend.add_argument("--add-capability", action="append", metavar="NAME", help="add a capability (platform)")
    amend.add_argument("--type", choices=am.TYPES, default=None, help="amendment type (default: inferred)")
    amend.add_argument("--expect-hash", default=None, help="refuse unless the constitution is still this one")
    amend.add_argument("--by", required=True, help="your email")
    amend.add_argument("--reason", required=True)
    amend.set_defaults(handler=cmd_amend)

    constitution = commands.add_parser("constitution", help="a skill's effective constitution and its history")
    actions = constitution.add_subparsers(dest="constitution_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the constitution now, or at a past time (replayed)")
    show.add_argument("system", metavar="SYSTEM")
    _tenant_options(show, platform=True)
    show.add_argument("--at", type=_timestamp, default=None, help="ISO timestamp with its time zone")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_constitution_show)
    history = actions.add_parser("history", help="the amendments that shaped it")
    history.add_argument("system", metavar="SYSTEM")
    _tenant_options(history, platform=True)
    history.set_defaults(handler=cmd_constitution_history)
    for name, text in (("freeze", "freeze automated changes"), ("unfreeze", "allow automated changes again")):
        freeze = actions.add_parser(name, help=text)
        _tenant_options(freeze)
        freeze.add_argument("--by", required=True)
        freeze.add_argument("--reason", default=None)
        freeze.set_defaults(handler=cmd_constitution_freeze, freeze_command=name)

    listing = commands.add_parser("amendments", help="amendments: list, roll back, approve")
    actions = listing.add_subparsers(dest="amendments_command", required=True, metavar="ACTION")
    list_parser = actions.add_parser("list", help="the tenant's and the platform's amendments")
    _tenant_options(list_parser, platform=True)
    list_parser.set_defaults(handler=cmd_amendments_list)
    rollback = actions.add_parser("rollback", help="undo an amendment with a new one")
    rollback.add_argument("amendment", metavar="AMENDMENT", type=_uuid)
    _tenant_options(rollback, platform=True)
    rollback.add_argument("--by", required=True)
    rollback.add_argument("--reason", required=True)
    rollback.set_defaults(handler=cmd_amendments_rollback)
    pending = actions.add_parser("pending", help="automated changes waiting for a person")
    _tenant_options(pending)
    pending.set_defaults(handler=cmd_amendments_pending)
    approve = actions.add_parser("approve", help="approve (or --reject) an automated change")
    approve.add_argument("pending", metavar="PENDING", type=_uuid)
    _tenant_options(approve)
    approve.add_argument("--by", required=True)
    approve.add_argument("--reject", action="store_true")
    approve.add_argument("--reason", default=None)
    approve.set_defaults(handler=cmd_amendments_approve)

    dreams = commands.add_parser("dreams", help="TARS's dreams: list, show, approve")
    actions = dreams.add_subparsers(dest="dreams_command", required=True, metavar="ACTION")
    listed = actions.add_parser("list", help="the tenant's dreams, newest night first")
    _tenant_options(listed)
    listed.add_argument("--pending", action="store_true", help="only those waiting for approval")
    listed.add_argument("--cycle", default=None, metavar="CYCLE_ID", help="one night, e.g. dream-2026-11-30-03:00")
    listed.set_defaults(handler=cmd_dreams_list)
    shown = actions.add_parser("show", help="one dream: mutation, replay window, estimates, decision record")
    shown.add_argument("dream", metavar="DREAM", type=_uuid)
    _tenant_options(shown)
    shown.set_defaults(handler=cmd_dreams_show)
    decided = actions.add_parser("approve", help="approve (or --reject) a dream waiting for approval")
    decided.add_argument("dream", metavar="DREAM", type=_uuid)
    _tenant_options(decided)
    decided.add_argument("--by", required=True)
    decided.add_argument("--reject", action="store_true")
    decided.add_argument("--reason", default=None)
    decided.set_defaults(handler=cmd_dreams_approve)
