"""`clay`: the project's command line.

  clay db start|stop|status|url|migrate   the database
  clay db backup|restore PATH             both databases, dumped and restored whole
  clay seed [--scale N] [--seed S]        load the sample world
  clay run                                materialize every asset, headless
  clay dev                                the Dagster UI on the same database and instance
  clay env                                shell exports for plain `dagster` commands
  clay deploy local|stop|status|backfill  the production topology on this host (Celery workers)
  clay route "REQUEST" --tenant NAME      route a request (logged as an execution unless --dry-run)
  clay learn rules [--tenant NAME] [--full]  learn routing rules now
  clay eval routing --train F --test F    measure rule learning and routing on labelled data

Errors are one line on stderr and a non-zero exit (CLAY_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from clay_pipelines import (
    cli_db,
    cli_deploy,
    cli_governance,
    cli_lifecycle,
    cli_payroll_confirm,
    cli_tars,
    settings,
)
from clay_pipelines.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CommandError, user_errors

if TYPE_CHECKING:
    import dagster as dg

    from clay_pipelines.processes import ProcessIdentity


def _say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Environment shared with Dagster's processes


def activate_environment(start_embedded: bool = True):  # noqa: ANN201 - DatabaseTarget
    """Resolve the database, export what Dagster's processes need, and prepare DAGSTER_HOME."""
    from clay_pipelines.db.targets import ensure_dagster_schema, resolve_target

    target = resolve_target(start_embedded=start_embedded)
    os.environ.update(target.as_environment())
    # Resources read the embedder through dg.EnvVar: give Dagster's processes the default too.
    os.environ["CLAY_EMBEDDER"] = settings.current().embedder
    ensure_dagster_schema(target)
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = settings.PROJECT_ROOT / "dagster.yaml"
    if home.resolve() != config.parent.resolve():
        installed = home / "dagster.yaml"
        if not installed.exists() or installed.read_bytes() != config.read_bytes():
            shutil.copyfile(config, installed)
    os.environ["DAGSTER_HOME"] = str(home)
    return target


def _database():
    from clay_pipelines.db import Database

    target = activate_environment()
    return Database(target.app_url, target.maintenance_url)


def _require_migrated(admin_url: str) -> None:
    from clay_pipelines.db.migrations import migration_status

    pending = [m for m in migration_status(admin_url) if m.applied_at is None]
    if pending:
        raise CommandError(
            f"the database schema is not up to date ({len(pending)} migration(s) pending, first "
            f"{pending[0].version:03d}_{pending[0].name}): run `clay db migrate`"
        )


# ---------------------------------------------------------------------------------------------
# clay db


def cmd_db_start(args: argparse.Namespace) -> int:
    from clay_pipelines.db.targets import resolve_target

    target = resolve_target()
    if target.mode == "external":
        _say(f"using {target.description}; nothing to start")
    else:
        _say(f"running: {target.description}")
    return 0


def cmd_db_stop(args: argparse.Namespace) -> int:
    from clay_pipelines.db import embedded

    if settings.current().database_url:
        _say("DATABASE_URL is set: the external database is not ours to stop")
        return 0
    was_running = embedded.stop(settings.pgdata_dir())
    _say(
        f"stopped the embedded database at {settings.pgdata_dir()}"
        if was_running
        else "the embedded database was not running"
    )
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    from clay_pipelines.db import embedded
    from clay_pipelines.db.migrations import migration_status
    from clay_pipelines.db.targets import resolve_target

    if not settings.current().database_url and not embedded.is_running(settings.pgdata_dir()):
        _say(f"embedded PostgreSQL at {settings.pgdata_dir()}: not running (`clay db start`)")
        return 0
    target = resolve_target()
    statuses = migration_status(target.admin_url)
    applied = [s for s in statuses if s.applied_at is not None]
    _say(f"database: {target.description}")
    _say(f"migrations: {len(applied)} of {len(statuses)} applied")
    for s in statuses:
        _say(f"  {s.version:03d}_{s.name}: {s.applied_at.isoformat(timespec='seconds') if s.applied_at else 'pending'}")
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    from clay_pipelines.db.targets import resolve_target

    target = resolve_target()
    _say(
        {
            "admin": target.admin_url,
            "app": target.app_url,
            "maintenance": target.maintenance_url,
            "dagster": target.dagster_url,
        }[args.role]
    )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Shell exports that let plain `dagster` commands reach the same database and instance."""
    import shlex

    target = activate_environment()
    variables = {**target.as_environment(), "DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    for name, value in variables.items():
        _say(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from clay_pipelines.db.migrations import apply_migrations
    from clay_pipelines.db.targets import ensure_dagster_schema, resolve_target

    target = resolve_target()
    applied = apply_migrations(target.admin_url)
    # Dagster's storage goes in the `dagster` schema of an external database: a migration Job that
    # runs before Dagster's own pods (Kubernetes) must leave it there.
    ensure_dagster_schema(target)
    if applied:
        for migration in applied:
            _say(f"applied {migration.path.name}")
    else:
        _say("schema up to date: no migration to apply")
    return 0


# ---------------------------------------------------------------------------------------------
# clay seed / run / dev


def cmd_seed(args: argparse.Namespace) -> int:
    from clay_pipelines.sample_world import WorldParameters, load_world

    if args.scale < 1:
        raise CommandError(f"--scale must be 1 or more, got {args.scale}", EXIT_BAD_INPUT)
    from clay_pipelines.db import Database

    target = activate_environment()
    _require_migrated(target.admin_url)
    with Database(target.app_url, target.maintenance_url) as db:
        summary = load_world(
            db,
            WorldParameters(seed=args.seed, scale=args.scale, anchor=args.anchor),
            settings.sample_world_dir(),
            progress=_say,
        )
    verb = "loaded" if summary.loaded else "already loaded"
    _say(
        f"sample world {verb} (seed {summary.seed}, scale {summary.scale}, ending {summary.anchor_date}) "
        f"in {summary.seconds:.1f} s:"
    )
    for table, count in summary.row_counts.items():
        _say(f"  {table:<18} {count:>9,}")
    _say(
        f"  payroll inbox      {summary.payroll['documents']} PDFs, {summary.payroll['entries']} entries, "
        f"{summary.payroll['employees']} employees: {summary.payroll['inbox']}"
    )
    return 0


def cmd_live_hour(args: argparse.Namespace) -> int:
    from clay_pipelines.db import Database
    from clay_pipelines.governance.keys import signer
    from clay_pipelines.sample_world.traffic import live_hour

    if args.requests < 1:
        raise CommandError(f"--requests must be 1 or more, got {args.requests}", EXIT_BAD_INPUT)
    target = activate_environment()
    _require_migrated(target.admin_url)
    with Database(target.app_url, target.maintenance_url) as db:
        hour = live_hour(db, _embedder(None), signer(), requests_per_tenant=args.requests, progress=_say)
    for name in hour.skipped:
        _say(f"{name}: the live hour already ran for this world; nothing written")
    if hour.routed:
        _say(
            f"live hour: {sum(hour.routed.values())} requests routed with a budget reservation, "
            f"{sum(hour.settled.values())} settled at completion, {sum(hour.refused.values())} refused for budget, "
            f"{sum(hour.signed.values())} receipts signed"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import dagster as dg

    from clay_pipelines.definitions import defs
    from clay_pipelines.payroll.defs import register_inbox_partitions
    from clay_pipelines.processes import ProcessIdentity, Terminated, exit_now, run_in_worker, signal_number
    from clay_pipelines.runner import (
        SelectionError,
        failure_summary,
        format_report,
        materialize_everything,
        resolve_selection,
    )

    try:
        selection = resolve_selection(defs, args.select) if args.select else None
    except SelectionError as error:
        raise CommandError(f"--select: {error}", EXIT_BAD_INPUT) from error
    target = activate_environment()
    _require_migrated(target.admin_url)
    debug = settings.current().debug
    # While a run executes, Dagster points this process's stderr at the run's log file; a message
    # about the interruption goes to the terminal through a copy taken now.
    terminal = os.dup(sys.stderr.fileno())
    with dg.DagsterInstance.get() as instance:
        new_files = register_inbox_partitions(instance, defs.resources["payroll"])
        if new_files:
            _say(f"payroll inbox: {len(new_files)} new file(s) registered as partitions")
        try:
            report = run_in_worker(
                lambda: materialize_everything(
                    defs,
                    instance,
                    selection=selection,
                    progress=_say,
                    console_log_level="INFO" if debug else "CRITICAL",
                )
            )
        except (KeyboardInterrupt, Terminated) as stop:
            signum = signal_number(stop)
            try:
                _end_interrupted_runs(instance, ProcessIdentity.current(), signum, terminal)
            finally:
                exit_now(128 + signum)
    _say("")
    _say(format_report(report))
    cli_lifecycle.say_states_after_run([a.asset for a in report.assets])
    if not report.ok:
        for failure in report.failures:
            print(f"clay: failed: {failure.line()}", file=sys.stderr)
            if debug and failure.traceback:
                print(f"  run {failure.run_id}\n{failure.traceback}", file=sys.stderr)
        hint = "" if debug else "; tracebacks with CLAY_DEBUG=1, or in the runs in the Dagster UI"
        raise CommandError(f"materialization failed: {failure_summary(report)}{hint}")
    return 0


def _end_interrupted_runs(instance: dg.DagsterInstance, identity: ProcessIdentity, signum: int, terminal: int) -> None:
    """Fail the runs this process started (the worker thread cannot be stopped; the process exits)."""
    import signal

    from clay_pipelines.runner import end_runs_of_process

    for s in (signal.SIGINT, signal.SIGTERM):  # a second signal ends the process without waiting
        signal.signal(s, signal.SIG_DFL)
    name = signal.Signals(signum).name
    try:
        ended = end_runs_of_process(instance, identity, f"clay run (pid {identity.pid}) was stopped by {name}.")
        message = f"clay: stopped by {name}" + (f"; marked failed: run {', '.join(ended)}" if ended else "")
    except Exception as error:  # the next `clay run` ends them: this process will be gone
        message = f"clay: stopped by {name}; its runs could not be marked failed now ({type(error).__name__})"
    os.write(terminal, (message + "\n").encode())


def cmd_dev(args: argparse.Namespace) -> int:
    import time

    from clay_pipelines.processes import supervise

    target = activate_environment()
    _require_migrated(target.admin_url)
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml"), "-p", str(args.port)]
    if args.host:
        command += ["-h", args.host]
    _say(f"Dagster UI on http://{args.host or '127.0.0.1'}:{args.port} ({target.description})")
    started = time.time()
    outcome = supervise(command, cwd=settings.PROJECT_ROOT)
    if outcome.stopped_by is not None:
        _settle_runs_of_dev(outcome.stopped, started)
    return outcome.exit_code


def _settle_runs_of_dev(pids: list[int], since: float) -> None:
    """Runs whose worker had to be killed would stay STARTED, and runs that ended as the tree went
    down keep their pool slots until a daemon runs again: settle both now."""
    import dagster as dg

    from clay_pipelines.runner import settle_runs_of_workers

    with dg.DagsterInstance.get() as instance:
        ended = settle_runs_of_workers(instance, pids, since, "Its run worker was killed when `clay dev` stopped.")
    if ended:
        print(f"clay: marked failed (their run worker was killed): run {', '.join(ended)}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# clay payroll


def cmd_payroll_extract(args: argparse.Namespace) -> int:
    import json

    from clay_pipelines.payroll.extract import extract_document
    from clay_pipelines.payroll.triage import UnreadableDocument

    path = Path(args.file)
    try:
        extraction = extract_document(path, password=args.password, configured_currency=args.currency)
    except UnreadableDocument as error:
        raise CommandError(f"{path}: {error.detail}", EXIT_BAD_INPUT) from error
    if args.json:
        print(json.dumps(extraction.as_json(), indent=2, ensure_ascii=False))
        return 0
    _say(
        f"{extraction.source_file}: {extraction.pages} page(s), template {extraction.template or '(generic)'}, "
        f"{len(extraction.entries)} entries"
    )
    for entry in extraction.entries:
        _say(
            f"  p{entry.page}  {entry.date or ''!s:<10}  {entry.amount:>14,}  {entry.currency or '':<3}  "
            f"{entry.employee_id or '':<8}  {entry.employee_name}"
        )
    for total in extraction.printed_totals:
        _say(f"  printed total (p{total.page}): {total.amount:,} {total.currency or ''}  [{total.label}]")
    for warning in extraction.warnings:
        _say(f"  warning: {warning}")
    return 0


def _tenant_and_file(db, reference: str, tenant: str | None) -> tuple:  # noqa: ANN001
    if tenant is None and "/" in reference:
        tenant, reference = reference.split("/", 1)
    if tenant is None:
        raise CommandError("name the tenant: --tenant NAME, or FILE as TENANT/FILE", EXIT_BAD_INPUT)
    return db.resolve_tenant(tenant), reference


def cmd_approve_payroll(args: argparse.Namespace) -> int:
    from clay_pipelines.payroll.approval import ApprovalError, decide_document

    with _database() as db:
        tenant_id, source_file = _tenant_and_file(db, args.file, args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                outcome = decide_document(conn, source_file, args.by, approve=not args.reject, reason=args.reason)
        except ApprovalError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _say(
        f"{outcome.source_file} version {outcome.version}: {outcome.decision} by {args.by}; "
        f"{outcome.deliveries_released} BambooHR deliveries {'released' if not args.reject else 'rejected'}"
        + (
            f", {outcome.deliveries_waiting_for_review} still waiting for name review"
            if outcome.deliveries_waiting_for_review
            else ""
        )
    )
    return 0


def cmd_payroll_resolve(args: argparse.Namespace) -> int:
    from uuid import UUID

    from clay_pipelines.payroll.approval import ApprovalError, resolve_entry

    try:
        entry_id = UUID(args.entry)
    except ValueError as error:
        raise CommandError(f"ENTRY must be a payroll entry id (a UUID), got {args.entry!r}", EXIT_BAD_INPUT) from error
    with _database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        try:
            with db.tenant_transaction(tenant_id) as conn:
                status = resolve_entry(conn, entry_id, args.employee, args.by)
        except ApprovalError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _say(f"entry {entry_id} is employee {args.employee} (resolved by {args.by}); delivery {status}")
    return 0


def cmd_payroll_pending(args: argparse.Namespace) -> int:
    import json

    from clay_pipelines.payroll.approval import pending

    with _database() as db:
        tenant_id = db.resolve_tenant(args.tenant)
        with db.tenant_transaction(tenant_id) as conn:
            files = pending(conn, everything=args.all)
    if args.json:
        rows = [{"source_file": f.source_file, "state": f.describe(), "needs": f.needs()} for f in files]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not files:
        _say("no payroll file waits for a person")
    for f in files:
        _say(f"{f.source_file}: {f.describe()}" + (f" -> {f.needs()}" if f.needs() else ""))
    return 0


# ---------------------------------------------------------------------------------------------


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from error


def _embedder(name: str | None):
    from clay_pipelines.routing.embeddings import get_embedder

    try:
        return get_embedder(name or settings.current().embedder)
    except (ValueError, RuntimeError) as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error


def cmd_route(args: argparse.Namespace) -> int:
    import json

    from clay_pipelines.db import UnknownTenantError
    from clay_pipelines.routing.router import route

    embedder = _embedder(args.embedder)
    with _database() as db:
        try:
            tenant_id = db.resolve_tenant(args.tenant)
            decision = route(db, tenant_id, args.request, embedder, dry_run=args.dry_run)
        except (UnknownTenantError, ValueError) as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
    if args.json:
        _say(json.dumps(decision.as_dict(), indent=2))
        return 0
    _say(f"{decision.system_name}  (path {decision.path}, confidence {decision.confidence:.3f})")
    if decision.rule_pattern:
        _say(f"  rule: {decision.rule_pattern!r} ({decision.rule_id}), similarity {decision.similarity}")
    if decision.alternatives:
        _say(f"  alternatives: {', '.join(decision.alternatives)}")
    for reason in decision.fallbacks:
        _say(f"  fallback: {reason}")
    if decision.requires_approval:
        _say(f"  requires approval for: {', '.join(decision.approval_actions)}")
    _say(f"  logged as execution {decision.execution_id}" if decision.execution_id else "  dry run: nothing logged")
    return 0


def cmd_learn_rules(args: argparse.Namespace) -> int:
    from clay_pipelines.db import UnknownTenantError
    from clay_pipelines.routing.embeddings import tag
    from clay_pipelines.routing.rule_store import learn_rules_full, learn_rules_incremental

    embedder = _embedder(args.embedder)
    learn = learn_rules_full if args.full else learn_rules_incremental
    with _database() as db:
        try:
            tenants = [db.resolve_tenant(args.tenant)] if args.tenant else db.tenant_ids()
        except UnknownTenantError as error:
            raise CommandError(str(error), EXIT_BAD_INPUT) from error
        for tenant_id in tenants:
            r = learn(db, tenant_id, tag(embedder), embedder.name)
            _say(
                f"{tenant_id}: {r.mode}, {r.executions_read:,} executions read, {r.created} rules created, "
                f"{r.updated} updated, {r.deactivated} deactivated, {r.active_rules} active ({r.seconds:.1f} s)"
            )
    return 0


def cmd_eval_routing(args: argparse.Namespace) -> int:
    import json

    from clay_pipelines.routing.evaluation import EvaluationInputError, evaluate_routing

    embedder = _embedder(args.embedder)
    try:
        result = evaluate_routing(
            args.train,
            args.test,
            embedder,
            noise=args.noise,
            seed=args.seed,
            oos_path=args.oos,
            calibrate_path=args.calibrate,
            calibrate_oos_path=args.calibrate_oos,
            dream_nights=args.dream_nights,
            oos_history_path=args.oos_history,
            progress=(lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True)),
        )
    except EvaluationInputError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from error
    _say(json.dumps(result, indent=None if args.json else 2))
    return 0


def _add_database_commands(commands: argparse._SubParsersAction) -> None:
    """clay db start|stop|status|url|migrate|backup|restore"""
    db = commands.add_parser("db", help="the database: start, stop, status, url, migrate, backup, restore")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("start", help="start the embedded PostgreSQL (no-op with DATABASE_URL)").set_defaults(
        handler=cmd_db_start
    )
    db_commands.add_parser("stop", help="stop the embedded PostgreSQL").set_defaults(handler=cmd_db_stop)
    db_commands.add_parser("status", help="which database is in use and which migrations are applied").set_defaults(
        handler=cmd_db_status
    )
    url = db_commands.add_parser("url", help="print the DSN in use")
    url.add_argument(
        "--role",
        choices=("admin", "app", "maintenance", "dagster"),
        default="app",
        help="whose connection (default: app, the application role)",
    )
    url.set_defaults(handler=cmd_db_url)
    db_commands.add_parser("migrate", help="apply pending migrations from sql/").set_defaults(handler=cmd_db_migrate)
    cli_db.register(db_commands)


def _add_world_commands(commands: argparse._SubParsersAction) -> None:
    """clay seed, run, env, dev: the sample world and Dagster"""
    seed = commands.add_parser("seed", help="load the sample world (idempotent)")
    seed.add_argument("--scale", type=int, default=1, help="size multiplier: 10 gives 200,000 executions (default 1)")
    seed.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    seed.add_argument("--anchor", type=_iso_date, default=None, help="the day the world's history ends (default today)")
    seed.set_defaults(handler=cmd_seed)

    live = commands.add_parser(
        "live-hour", help="the sample world's live hour: route, reserve, execute, settle and sign (once per world)"
    )
    live.add_argument("--requests", type=int, default=12, help="requests per tenant (default 12)")
    live.set_defaults(handler=cmd_live_hour)

    run = commands.add_parser("run", help="materialize every asset, all partitions, and print a summary")
    run.add_argument("--select", nargs="*", metavar="ASSET", help="only these assets (e.g. monitoring/tool_health)")
    run.set_defaults(handler=cmd_run)

    commands.add_parser(
        "env", help='print shell exports for plain `dagster` commands: eval "$(clay env)"'
    ).set_defaults(handler=cmd_env)

    dev = commands.add_parser("dev", help="open the Dagster UI on the same database and instance")
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument("--host", default=None)
    dev.set_defaults(handler=cmd_dev)


def _add_payroll_commands(commands: argparse._SubParsersAction) -> None:
    """clay payroll extract|resolve|pending, clay approve payroll"""
    payroll = commands.add_parser("payroll", help="payroll PDFs: extract, resolve, pending")
    payroll_commands = payroll.add_subparsers(dest="payroll_command", required=True, metavar="ACTION")
    extract = payroll_commands.add_parser("extract", help="extract a payroll PDF's entries (no database)")
    extract.add_argument("file", help="the PDF")
    extract.add_argument("--password", default=None, help="password of an encrypted PDF")
    extract.add_argument("--currency", default=None, help="ISO currency for amounts printed without one")
    extract.add_argument("--json", action="store_true", help="print JSON (amounts as decimal strings, ISO dates)")
    extract.set_defaults(handler=cmd_payroll_extract)
    resolve = payroll_commands.add_parser("resolve", help="say who an unresolved payee is")
    resolve.add_argument("entry", metavar="ENTRY", help="the payroll entry id (from the review queue)")
    resolve.add_argument("--employee", required=True, help="the employee id in the directory")
    resolve.add_argument("--by", required=True, help="the reviewer's email")
    resolve.add_argument("--tenant", required=True, help="tenant name, domain or id")
    resolve.set_defaults(handler=cmd_payroll_resolve)
    pending = payroll_commands.add_parser(
        "pending", help="payroll files waiting for a person: approval, name review, duplicates, quarantine"
    )
    pending.add_argument("--tenant", required=True, help="tenant name, domain or id")
    pending.add_argument("--all", action="store_true", help="every file, with its state, not only those waiting")
    pending.add_argument("--json", action="store_true", help="print JSON")
    pending.set_defaults(handler=cmd_payroll_pending)
    cli_payroll_confirm.register(payroll_commands)

    approve = commands.add_parser("approve", help="approve (or reject) what waits for ARM-mode approval")
    approve_commands = approve.add_subparsers(dest="approve_command", required=True, metavar="WHAT")
    approve_payroll = approve_commands.add_parser("payroll", help="a payroll file's upload to BambooHR")
    approve_payroll.add_argument("file", metavar="FILE", help="the file name, or TENANT/FILE")
    approve_payroll.add_argument("--by", required=True, help="the approver's email")
    approve_payroll.add_argument("--reason", default=None)
    approve_payroll.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve_payroll.add_argument("--tenant", default=None, help="tenant name, domain or id")
    approve_payroll.set_defaults(handler=cmd_approve_payroll)


def _add_routing_commands(commands: argparse._SubParsersAction) -> None:
    """clay route, clay learn rules, clay eval routing|dreams"""
    route_parser = commands.add_parser("route", help="route a request with the learned rules")
    route_parser.add_argument("request", help="the user's request, quoted")
    route_parser.add_argument("--tenant", required=True, help="tenant name, domain or id")
    route_parser.add_argument("--embedder", default=None, help="hashing (default: $CLAY_EMBEDDER), minilm, openai")
    route_parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    route_parser.add_argument("--dry-run", action="store_true", help="decide only; log no execution")
    route_parser.set_defaults(handler=cmd_route)

    learn = commands.add_parser("learn", help="learn from executions")
    learn_commands = learn.add_subparsers(dest="what", required=True, metavar="WHAT")
    rules = learn_commands.add_parser("rules", help="routing rules (incremental unless --full)")
    rules.add_argument("--tenant", default=None, help="one tenant (default: every tenant)")
    rules.add_argument("--full", action="store_true", help="re-cluster every execution")
    rules.add_argument("--embedder", default=None)
    rules.set_defaults(handler=cmd_learn_rules)

    evaluate = commands.add_parser("eval", help="measure a pipeline on labelled data")
    eval_commands = evaluate.add_subparsers(dest="what", required=True, metavar="WHAT")
    routing = eval_commands.add_parser("routing", help="rule learning and routing on text,label CSV files")
    routing.add_argument("--train", type=Path, required=True, help="CSV text,label: the executions to learn from")
    routing.add_argument("--test", type=Path, required=True, help="CSV text,label: the requests to route")
    routing.add_argument("--embedder", default=None, help="hashing (default), minilm, openai")
    routing.add_argument("--noise", type=float, default=0.15, help="share of extra failed executions on a wrong system")
    routing.add_argument("--seed", type=int, default=0)
    routing.add_argument("--oos", type=Path, default=None, help="CSV text[,label]: requests that fit no label")
    routing.add_argument(
        "--calibrate", type=Path, default=None, help="CSV text,label: validation data for the threshold"
    )
    routing.add_argument("--calibrate-oos", type=Path, default=None, help="CSV text: out-of-scope validation data")
    routing.add_argument(
        "--dream-nights", type=int, default=0, help="spread the history over 28 days and dream N nights (0-7)"
    )
    routing.add_argument(
        "--oos-history",
        type=Path,
        default=None,
        help="CSV text: with --dream-nights, requests that fit no label, logged as the catch-all's successes",
    )
    routing.add_argument("--json", action="store_true", help="one line of JSON, no progress")
    routing.set_defaults(handler=cmd_eval_routing)
    cli_tars.register_eval(eval_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_database_commands(commands)
    _add_world_commands(commands)
    _add_payroll_commands(commands)
    _add_routing_commands(commands)
    cli_tars.register(commands)
    cli_lifecycle.register(commands)
    cli_governance.register(commands)
    cli_deploy.register(commands)
    return parser


def _argument_labels(parser: argparse.ArgumentParser) -> dict[str, str]:
    """How each argument is written on the command line (`--tenant`, `REQUEST`), by its dest."""
    labels: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                for dest, label in _argument_labels(subparser).items():
                    labels.setdefault(dest, label)
        else:
            labels.setdefault(action.dest, action.option_strings[-1] if action.option_strings else action.dest.upper())
    return labels


def _undecodable_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first text argument that is not UTF-8 (Python keeps such argv bytes as surrogate escapes)."""
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue  # paths may hold any bytes the file system takes
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                label = _argument_labels(parser).get(dest, dest)
                byte = text[error.start].encode("utf-8", "surrogateescape")
                return f"{label} is not UTF-8 text (byte 0x{byte.hex()} at character {error.start + 1})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from clay_pipelines.processes import Terminated, raise_on_sigterm

    logging.basicConfig(level=settings.current().log_level, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C: `finally` blocks stop servers and roll back transactions.
    raise_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        undecodable = _undecodable_argument(parser, args)
        if undecodable:
            raise CommandError(undecodable, EXIT_BAD_INPUT)
        return handler(args)
    except CommandError as error:
        print(f"clay: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 143
    except Exception as error:
        if settings.current().debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, user_errors()):
            print(f"clay: error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"clay: error: {type(error).__name__}: {message}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
