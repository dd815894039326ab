"""The errors a person acts on, shared by the command line and the domains it calls.

The CLI prints a CommandError as one line and exits with its code. It lives in a module of its own
so that every command module (and `python -m clay_pipelines.cli`, whose main module is a second copy
of cli.py) raises and catches the one class.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class CommandError(RuntimeError):
    """A failure the user can act on; printed as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def user_errors() -> tuple[type[Exception], ...]:
    """The domains' errors that are the user's to act on (bad input, a refused change, an unknown
    tenant): the command line prints each as one line and exits with EXIT_BAD_INPUT. One list, in
    one place; imported late so that `clay --help` stays quick."""
    from clay_pipelines.db import TenantRequiredError, UnknownTenantError
    from clay_pipelines.db.backup import BackupError
    from clay_pipelines.db.embedded import EmbeddedServerError
    from clay_pipelines.governance.budgets import BudgetRefusedError
    from clay_pipelines.governance.completion import ExecutionError
    from clay_pipelines.governance.keys import ReceiptKeyError
    from clay_pipelines.payroll.approval import ApprovalError
    from clay_pipelines.routing.evaluation import EvaluationInputError
    from clay_pipelines.sample_world.loader import WorldReplacementError
    from clay_pipelines.tars.amendments import AmendmentError
    from clay_pipelines.tars.constitution import ConstitutionError
    from clay_pipelines.tars.decision import DecisionRuleError

    return (
        UnknownTenantError,
        TenantRequiredError,
        ApprovalError,
        AmendmentError,
        ConstitutionError,
        DecisionRuleError,
        EvaluationInputError,
        ExecutionError,
        BudgetRefusedError,
        ReceiptKeyError,
        WorldReplacementError,
        EmbeddedServerError,
        BackupError,
    )
