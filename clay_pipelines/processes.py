"""Process lifetime for the command line: who a process is, how it stops, and what it leaves behind.

Nothing here knows Dagster. `clay run` tags its runs with a ProcessIdentity so that a later `clay run`
can tell the runs of a process that is gone from the runs of one still working; SIGTERM is turned
into an exception so that `finally` blocks (a throwaway server's shutdown, a transaction's rollback)
run on it as they do on Ctrl-C; `run_in_worker` keeps the main thread free to take signals while
work that cannot be interrupted runs in another thread; `supervise` runs a child process tree and
takes it down, whole, when told to stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A process's start time, as the kernel reports it, identifies it across pid reuse (to this tolerance).
_START_TIME_TOLERANCE_SECONDS = 1.0


class Terminated(BaseException):  # a signal, like KeyboardInterrupt, not an error
    """SIGTERM, raised in the main thread (a BaseException so that `except Exception` lets it pass)."""

    signum = signal.SIGTERM


def signal_number(stop: BaseException) -> int:
    """The signal behind a KeyboardInterrupt or a Terminated."""
    return signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def raise_on_sigterm() -> None:
    """SIGTERM raises Terminated in the main thread, so cleanup runs as it does on Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them.

    For steps that must not be cut in half: a server being started must be known to have started so
    that it can be stopped; a server being stopped must finish stopping.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signal.raise_signal(received[0])


@dataclass(frozen=True)
class ProcessIdentity:
    """A process, told apart from a later one that reuses its pid by its start time."""

    host: str
    pid: int
    started: float  # seconds since the epoch, as the kernel reports the process's start

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def is_alive(self) -> bool:
        """Whether this process still runs. Only answerable on its own host: elsewhere, assume it does."""
        if self.host != socket.gethostname():
            return True
        try:
            process = psutil.Process(self.pid)
            return (
                abs(process.create_time() - self.started) <= _START_TIME_TOLERANCE_SECONDS
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return False


def run_in_worker(work: Callable[[], T]) -> T:
    """Run `work` in a worker thread and return its result (or raise its exception).

    The main thread only waits, so SIGINT/SIGTERM reach it whatever the work is doing (Dagster's
    in-process executor, for one, swallows them on the main thread while it waits for a pool slot).
    A KeyboardInterrupt or Terminated then propagates from here while the worker is still running:
    the caller ends what the work started and leaves with os._exit, since a thread cannot be stopped.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, name="clay-worker", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


def exit_now(code: int) -> None:
    """Leave at once (a worker thread may still be running): flush what was printed, skip the rest."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# ---------------------------------------------------------------------------------------------
# A supervised process tree (`clay dev`)


def _die_with_parent() -> None:
    # Linux: if the supervisor is killed outright (SIGKILL), the child is told to stop too.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tree(root: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(root)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(root: int, grace_seconds: float) -> tuple[list[int], list[int]]:
    """SIGTERM the process group led by `root` and every descendant; SIGKILL what still runs after
    the grace period. Returns the pids of the tree, and those that had to be killed."""
    members = _tree(root)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(root, signal.SIGTERM)
    for process in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(members, timeout=grace_seconds)
    # Processes started during the shutdown are not in the first snapshot.
    late = _tree(root)
    survivors = {p.pid: p for p in [*alive, *late] if p.is_running()}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(root, signal.SIGKILL)
    for process in survivors.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(survivors.values()), timeout=10)
    return sorted({p.pid for p in [*members, *late]}), sorted(survivors)


@dataclass(frozen=True)
class Supervised:
    exit_code: int
    stopped_by: int | None = None  # the signal that asked us to stop, if one did
    stopped: list[int] = field(default_factory=list)  # the tree's pids when it was stopped
    killed: list[int] = field(default_factory=list)  # those that did not stop within the grace period


def supervise(command: Sequence[str], cwd: Path, grace_seconds: float = 20.0) -> Supervised:
    """Run `command` in a session of its own until it exits, or until SIGINT/SIGTERM reaches us:
    then stop its whole tree (SIGTERM, then SIGKILL after `grace_seconds`).

    The child's own session keeps a terminal's Ctrl-C away from it: this process decides how the
    tree stops, and a tree that will not stop does not keep it waiting.
    """
    raise_on_sigterm()
    with deferred_signals():  # the child must exist before a stop can be carried out
        child = subprocess.Popen(list(command), cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return Supervised(child.wait())
    except (KeyboardInterrupt, Terminated) as stop:
        signum = signal_number(stop)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:  # a second Ctrl-C during the (bounded) shutdown changes nothing
        signal.signal(s, signal.SIG_IGN)
    try:
        stopped, killed = stop_tree(child.pid, grace_seconds)
        child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return Supervised(128 + signum, signum, stopped, killed)
