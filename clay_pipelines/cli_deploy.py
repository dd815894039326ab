"""`clay deploy`: Dagster's production topology on this host (clay_pipelines/deploy/).

clay deploy local [--workers N]      start PostgreSQL on TCP, Redis, the code server, webserver,
                                     daemon and N Celery workers (the last in its own namespaces)
clay deploy status                   each process: running or not, its pid and log
clay deploy stop                     stop them all (SIGTERM, then SIGKILL); nothing running is fine
clay deploy backfill JOB --from D --to D [--wait S]   one run per partition, through the daemon
"""

from __future__ import annotations

import argparse

from clay_pipelines.errors import EXIT_FAILURE, CommandError


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_deploy_local(args: argparse.Namespace) -> int:
    from clay_pipelines.deploy import local
    from clay_pipelines.deploy.topology import DeployError

    try:
        started = local.start(args.workers, _say, paused=args.paused)
    except DeployError as error:
        raise CommandError(str(error), EXIT_FAILURE) from error
    for record in started.processes:
        where = " (own network and mount namespace)" if record.isolated else ""
        _say(f"{record.name:<12} pid {record.pid:<8} log {record.log}{where}")
    _say(f"Dagster UI on {started.webserver_url}; `clay deploy stop` ends it all")
    return 0


def cmd_deploy_stop(args: argparse.Namespace) -> int:
    from clay_pipelines.deploy.topology import Layout, stop

    if not stop(Layout.current(), _say):
        _say(f"no deployment runs from {Layout.current().root}: nothing to stop")
    return 0


def cmd_deploy_status(args: argparse.Namespace) -> int:
    from clay_pipelines.deploy.topology import Layout, read_deployment, status

    layout = Layout.current()
    found = status(layout)
    if not found:
        _say(f"no deployment runs from {layout.root}")
        return 0
    for entry in found:
        _say(entry.line())
    deployment = read_deployment(layout)
    if deployment is not None:
        _say(deployment.namespace_note)
    down = [entry.record.name for entry in found if not entry.running]
    if down:
        _say(f"not running: {', '.join(down)} (see their logs; `clay deploy stop` then `clay deploy local` restarts)")
        return EXIT_FAILURE
    return 0


def cmd_deploy_backfill(args: argparse.Namespace) -> int:
    import os

    import dagster as dg

    from clay_pipelines.deploy import backfill, local
    from clay_pipelines.deploy.topology import DeployError

    try:
        environment = local.environment_for_commands()
        backfill_id = backfill.launch(args.job, args.start, args.end, environment)
        _say(f"backfill {backfill_id}: {args.job} from {args.start} to {args.end}")
        if args.wait is None:
            return 0
        os.environ.update(environment)  # the deployment's instance, for this process
        with dg.DagsterInstance.get() as instance:
            runs = len(instance.get_backfill(backfill_id).partition_names or [])
            found = backfill.wait(instance, backfill_id, runs, args.wait)
    except DeployError as error:
        raise CommandError(str(error), EXIT_FAILURE) from error
    for outcome in found:
        _say(
            f"  {outcome.partition}  {outcome.status:<8} run {outcome.run_id[:8]}  on {', '.join(outcome.workers) or '-'}"
        )
    failed = [o for o in found if o.status != dg.DagsterRunStatus.SUCCESS.value]
    return EXIT_FAILURE if failed else 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--wait takes seconds, got {text!r}") from error
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--wait takes a positive number of seconds, got {text!r}")
    return value


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"--workers takes a number from 1 to 16, got {text!r}")
    return int(text)


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser("deploy", help="Dagster's production topology on this host, Celery workers")
    deploy_commands = deploy.add_subparsers(dest="deploy_command", required=True, metavar="COMMAND")
    local = deploy_commands.add_parser("local", help="start the deployment (one host, loopback)")
    local.add_argument("--workers", type=_workers, default=2, help="Celery workers (default 2)")
    local.add_argument(
        "--paused",
        action="store_true",
        help="stop every schedule and sensor before the daemon starts (they stay stopped until started again)",
    )
    local.set_defaults(handler=cmd_deploy_local)
    deploy_commands.add_parser("stop", help="stop every process of the deployment").set_defaults(
        handler=cmd_deploy_stop
    )
    deploy_commands.add_parser("status", help="the deployment's processes").set_defaults(handler=cmd_deploy_status)
    run = deploy_commands.add_parser("backfill", help="backfill a partitioned job through the deployment")
    run.add_argument("job", metavar="JOB", help="a partitioned job, e.g. request_embeddings")
    run.add_argument("--from", dest="start", required=True, help="first partition (e.g. 2026-01-01)")
    run.add_argument("--to", dest="end", required=True, help="last partition")
    run.add_argument("--wait", type=_positive_seconds, default=None, help="wait up to S seconds for its runs")
    run.set_defaults(handler=cmd_deploy_backfill)
