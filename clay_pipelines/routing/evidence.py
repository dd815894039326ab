"""Which executions are evidence of how well a system handles a request: one definition for the rule
learner's reader, the rules' statistics and the registry's rollups.

An execution is evidence once it has completed (a routed request that has not completed says nothing
yet) and unless governance blocked it (a refusal to approve says nothing about the system).
"""

from __future__ import annotations

from psycopg import sql


def counts_as_evidence(alias: str = "e") -> sql.Composed:
    """The SQL condition, over the executions row named `alias`."""
    row = sql.Identifier(alias)
    return sql.SQL("({row}.completed_at IS NOT NULL AND {row}.status <> 'governance_blocked')").format(row=row)
