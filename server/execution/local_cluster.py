"""A multi-node Ray cluster on this machine, each node a ``ray start`` of its own, as an
operator would start one: for ``AIHUB_LOCAL_RAY_NODES`` (make run) and the cluster tests.

Ray's nodes and the collective libraries of distributed training listen on every interface,
so this runs only inside a private network namespace (server/isolation.py), where every
interface is loopback. Every process of the cluster is found by its temp dir, so stopping
it ends only these processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server import isolation
from server.private import private_dir

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class NodeSpec:
    cpus: int
    resources: Mapping[str, float] = field(default_factory=dict)


class LocalCluster:
    """A head node and further nodes, on 127.0.0.1, with token authentication."""

    def __init__(self, temp_dir: Path, nodes: list[NodeSpec], *, port: int | None = None) -> None:
        if not isolation.isolated():
            raise RuntimeError(
                "a local multi-node Ray cluster listens on every interface: start it inside a private network namespace "
                "(python -m server does so when it starts the whole stack; make test runs the tests so)"
            )
        if not nodes:
            raise ValueError("a cluster needs at least a head node")
        self.temp_dir = temp_dir
        self.nodes = nodes
        self.port = port or _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}

    def command(self, node: NodeSpec, *args: str) -> list[str]:
        """The ``ray start`` that starts ``node`` (a subclass may start one otherwise: the
        cluster tests start one from an environment without this project)."""
        return [
            RAY,
            "start",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--num-cpus={node.cpus}",
            f"--resources={json.dumps(dict(node.resources))}",
            *args,
        ]

    def _start(self, node: NodeSpec, *args: str) -> None:
        command = self.command(node, *args)
        # A session of its own: the nodes' daemons do not get a terminal's Ctrl-C (the server stops them).
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120, check=False, start_new_session=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def start(self) -> None:
        """Start every node; the caller's process joins with ``ray.init(address=...)``
        (RAY_AUTH_MODE=token is set for it here)."""
        os.environ["RAY_AUTH_MODE"] = "token"
        # The token the nodes and the driver share (~/.ray/auth_token): made once, on a machine
        # that has none yet (`ray start` refuses token mode without one); an existing one is kept.
        made = subprocess.run(
            [RAY, "get-auth-token", "--generate"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        if made.returncode:
            raise RuntimeError(f"ray get-auth-token --generate failed: {made.stderr[-2000:]}")
        head, *others = self.nodes
        self._start(head, "--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={ray_temp(self.temp_dir)}")
        for node in others:
            self.start_node(node)

    def start_node(self, node: NodeSpec) -> None:
        self._start(node, f"--address={self.address}")

    def kill_node(self, resource: str) -> None:
        """End the node that has the custom ``resource`` as a lost machine would end: its
        raylet killed (its workers go with it)."""
        import psutil

        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "raylet" and resource in cmdline and str(self.temp_dir) in cmdline:
                proc.send_signal(signal.SIGKILL)

    def dead_nodes(self) -> list[NodeSpec]:
        """The nodes whose raylet no longer runs (killed, or its machine lost), the head first
        when it is one of them: a node is known by its custom resource (``node_<i>``) on the
        raylet's command line, as in :meth:`kill_node`."""
        import psutil

        raylets = []
        for proc in psutil.process_iter(["name", "cmdline", "status"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "raylet" and proc.info["status"] != psutil.STATUS_ZOMBIE and str(self.temp_dir) in cmdline:
                raylets.append(cmdline)
        marks = [[re.compile(rf"\b{re.escape(name)}\b") for name in node.resources] for node in self.nodes]
        return [node for node, mark in zip(self.nodes, marks, strict=True) if not any(all(m.search(c) for m in mark) for c in raylets)]

    def stop(self) -> None:
        """End every process of this cluster, and only those: found by its temp dir, or by
        its GCS address (Ray's client server names only that); then remove the temp dir."""
        import psutil

        marks = (str(self.temp_dir), *([f"--address={self.address}"] if getattr(self, "address", None) else []))
        ours = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                lines = [" ".join(p.cmdline()) for p in (proc, *proc.parents())]
            except psutil.Error:
                continue
            if any(mark in line for line in lines for mark in marks):
                ours.append(proc)
        for proc in ours:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(ours, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # its sessions, logs and sockets: nothing outlives the cluster


def ray_temp(private: Path) -> Path:
    """Ray's temp folder inside ``private``, made 0700 here: Ray makes its own temp folder
    0777 and its files 0644 (its sessions hold every tenant's log lines), so the folder
    above it is what keeps them private."""
    return private_dir(private) / "r"


def stop_orphans(prefix: str = "/tmp/aihub-ray-") -> list[Path]:  # noqa: S108 - where local clusters live
    """End the local clusters whose starting process is gone (their temp dir is
    ``<prefix><pid>``): what a server killed with -9 left running. Returns their temp dirs."""
    import psutil

    ended = []
    for temp_dir in Path(prefix).parent.glob(Path(prefix).name + "*"):
        pid = temp_dir.name.removeprefix(Path(prefix).name)
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            LocalCluster.stop(_Orphan(temp_dir))  # type: ignore[arg-type]
            ended.append(temp_dir)
    return ended


@dataclass
class _Orphan:
    temp_dir: Path
