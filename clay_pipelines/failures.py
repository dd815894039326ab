"""Which failures are worth another try.

A transient failure is one the same work can get past by trying again later: a dropped or refused
database connection, a busy server, a serialization conflict, a network timeout. Everything else
(bad input, a failed check, a bug) fails the same way every time, so retrying it only delays the
error and repeats its side effects.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg

# psycopg.OperationalError covers connection loss, admin shutdown, too many connections, lock and
# statement timeouts, serialization failures and deadlocks (and psycopg_pool.PoolTimeout). These
# SQLSTATE classes are OperationalErrors too, but a wrong password or role does not heal.
_PERMANENT_SQLSTATE_CLASSES = frozenset({"28"})  # invalid authorization specification

_TRANSIENT_NETWORK = (
    ConnectionError,
    TimeoutError,
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it (raise ... from, or raised while handling)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is transient."""
    for link in _chain(error):
        if isinstance(link, psycopg.OperationalError):
            sqlstate = getattr(link, "sqlstate", None) or ""
            return sqlstate[:2] not in _PERMANENT_SQLSTATE_CLASSES
        if isinstance(link, _TRANSIENT_NETWORK):
            return True
    return False


def one_line(error: BaseException) -> str:
    """`Type: message` on one line, for a person."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
