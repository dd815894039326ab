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
