"""A worker's own network and mount namespace: it reaches PostgreSQL and Redis over TCP only.

A network namespace alone does not hide unix sockets or files, so the worker also gets a mount
namespace in which a tmpfs covers the deployment's state folder (the database's data and socket,
Redis's files, Dagster's home) and the socket folder where that lies elsewhere, all but the folders
steps share (isolate.py). What it can reach is
a veth pair: the host end and the worker end of a private /30 (10.200.0.0/16, its place derived from
the state folder so that two deployments on one machine do not collide). PostgreSQL and Redis
listen on the host end too, and pg_hba trusts only the worker end's single address.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iproute2's `ip` and util-linux's `unshare`; where the
machine does not allow them, `probe` says why and the workers run without namespaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerNamespace:
    name: str  # the network namespace (ip netns)
    host_veth: str
    worker_veth: str
    host_address: str
    worker_address: str

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> WorkerNamespace:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
        block = int(digest[:4], 16) % (256 * 64)  # one of the 16,384 /30 blocks of 10.200.0.0/16
        network = ipaddress.IPv4Address("10.200.0.0") + 4 * block
        tag = digest[:8]
        return cls(
            name=f"clay-{tag}",
            host_veth=f"clh{tag}",  # interface names: 15 characters at most
            worker_veth=f"clw{tag}",
            host_address=str(network + 1),
            worker_address=str(network + 2),
        )

    def exists(self) -> bool:
        return (Path("/run/netns") / self.name).exists()

    def create(self) -> None:
        """The namespace and its veth pair, up and addressed; leftovers of an earlier one are removed first."""
        self.delete()
        for command in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.worker_veth],
            ["ip", "link", "set", self.worker_veth, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_veth],
            ["ip", "link", "set", self.host_veth, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.worker_address}/30", "dev", self.worker_veth],
            ["ip", "-n", self.name, "link", "set", self.worker_veth, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ):
            _run(command)

    def delete(self) -> bool:
        """Remove the veth pair and the namespace; returns whether there was anything to remove."""
        had_link = subprocess.run(["ip", "link", "show", self.host_veth], capture_output=True).returncode == 0
        if had_link:
            subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True)
        had_namespace = self.exists()
        if had_namespace:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        return had_link or had_namespace

    def wrap(
        self, command: Sequence[str], hidden: Sequence[Path], shared: Sequence[Path], make: Sequence[Path] = ()
    ) -> list[str]:
        """`command` run in this network namespace and in a new mount namespace where each `hidden`
        folder is an empty tmpfs but for the `shared` folders inside it (clay_pipelines/deploy/isolate.py)."""
        isolate = [sys.executable, "-m", "clay_pipelines.deploy.isolate"]
        for folder in hidden:
            isolate += ["--hide", str(folder)]
        for folder in shared:
            isolate += ["--share", str(folder)]
        for folder in make:
            isolate += ["--make", str(folder)]
        return [
            "ip", "netns", "exec", self.name,
            "unshare", "--mount", "--propagation", "private", "--",
            *isolate, "--", *command,
        ]  # fmt: skip


def _run(command: Sequence[str]) -> None:
    done = subprocess.run(list(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"`{' '.join(command)}` failed: {' '.join(done.stderr.split()) or done.returncode}")


def probe() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not running as root (a network namespace needs CAP_NET_ADMIN)"
    missing = [tool for tool in ("ip", "unshare", "mount") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: iproute2, util-linux, mount)"
    name = f"clay-probe-{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if created.returncode != 0:
        return f"`ip netns add` refused: {' '.join(created.stderr.split())}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    with tempfile.TemporaryDirectory() as folder:
        mounted = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs", "clay-probe", folder],
            capture_output=True,
            text=True,
        )
    if mounted.returncode != 0:
        return f"a mount namespace is refused: {' '.join(mounted.stderr.split())}"
    return None
