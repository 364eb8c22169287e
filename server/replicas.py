"""Replicas: ``AIHUB_REPLICAS=N python -m server`` runs N gRPC servers on one database and one
Ray cluster, each dispatching jobs, behind one Envoy that balances calls across them and
asks each for its grpc.health.v1 status every second (envoy.yaml): a draining replica
(NOT_SERVING) or a dead one gets no new calls.

This process supervises: it starts what the replicas share (the embedded PostgreSQL when no
DATABASE_URL is given, a local Ray cluster started with ``ray start`` when no RAY_ADDRESS is
given; that needs the private network namespace, see server/isolation.py), migrates the
schema once, then starts each replica as ``python -m server`` serving gRPC on a Unix socket
of its own (``<data>/run/grpc-<i>.sock``). A replica that dies is started again; its running
jobs are taken over by the others when their leases expire. Ctrl-C or SIGTERM drains and
stops every replica (each drains as one server does), then what they shared.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from server import isolation, lifecycle, private
from server.settings import Settings

if TYPE_CHECKING:
    from server.api.envoy import Envoy
    from server.execution.local_cluster import LocalCluster
    from storage.embedded import EmbeddedPostgres

log = logging.getLogger("server.replicas")
RESTART_SECONDS = 2.0  # a replica that died is started again after this long


def sockets(run_dir: Path, count: int) -> list[Path]:
    """Where each replica serves gRPC (one server: the single socket of server/__main__.py)."""
    return [run_dir / "grpc.sock"] if count == 1 else [run_dir / f"grpc-{i}.sock" for i in range(count)]


def metrics_sockets(run_dir: Path, count: int) -> list[Path]:
    """Where each replica serves /metrics (Envoy passes 127.0.0.1:AIHUB_METRICS_PORT+i to replica i)."""
    return [run_dir / "metrics.sock"] if count == 1 else [run_dir / f"metrics-{i}.sock" for i in range(count)]


def accepts(path: os.PathLike[str] | str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
        return True
    except OSError:
        return False


def front_envoy(settings: Settings, upstreams: list[Path], metrics: list[Path]):
    """Envoy on the host's loopback in front of gRPC servers on Unix sockets: REST on
    AIHUB_HTTP_PORT, gRPC passed through on AIHUB_GRPC_PORT, each server's /metrics on
    AIHUB_METRICS_PORT (+ its index)."""
    from server.api.envoy import Envoy

    return Envoy(
        grpc_port=0,
        http_port=settings.http_port,
        http_host=settings.http_host,
        grpc_unix=[str(p) for p in upstreams],
        grpc_listen=(settings.grpc_host, settings.grpc_port),
        rest=settings.rest,
        metrics=[(settings.metrics_port + i, str(path)) for i, path in enumerate(metrics)],
    )


def banner(settings: Settings, grpc: str, rest_url: str | None, *, replicas: int = 1) -> None:
    rest = f", REST on {rest_url}" if rest_url else ""
    mode = "authentication OFF (loopback only; AIHUB_AUTH=required to turn it on)" if settings.auth == "off" else "API keys required"
    several = f" ({replicas} replicas)" if replicas > 1 else ""
    print(f"AI Hub Training{several}: gRPC on {grpc}{rest}; {mode}. Ctrl-C to stop.", flush=True)


class Supervisor:
    def __init__(self, settings: Settings, *, seed_demo: bool, envoy: bool, secrets: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.secrets = dict(secrets or {})  # passed to each replica by pipe (server/private.py), never in its environment
        self.seed_demo = seed_demo
        self.with_envoy = envoy  # False: the front process (server/__main__.py) runs Envoy
        self._envoy: Envoy | None = None
        self.run_dir = (settings.data_dir / "run").resolve()
        self.sockets = sockets(self.run_dir, settings.replicas)
        self.metrics_sockets = metrics_sockets(self.run_dir, settings.replicas)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * settings.replicas
        self._stopping = False
        self._pg: EmbeddedPostgres | None = None
        self._cluster: LocalCluster | None = None

    def start_shared(self) -> tuple[str, str]:
        """The database and the Ray cluster every replica uses: (database URL, Ray address)."""
        from storage import db

        s = self.settings
        url = s.database_url
        if not url:
            from storage.embedded import EmbeddedPostgres

            s.data_dir.mkdir(parents=True, exist_ok=True)
            self._pg = EmbeddedPostgres((s.data_dir / "postgres").resolve())
            url = self._pg.start()
        db.migrate(url)  # once, before any replica starts
        address = s.ray_address
        if not address:
            if not isolation.isolated():
                raise SystemExit(
                    "python -m server: AIHUB_REPLICAS > 1 shares one Ray cluster: give RAY_ADDRESS, or let the server start "
                    "it in a private network namespace (leave DATABASE_URL, RAY_ADDRESS and AIHUB_ISOLATE unset)"
                )
            from server.execution.local_cluster import LocalCluster, NodeSpec, stop_orphans

            for orphan in stop_orphans():
                log.warning("ended the local Ray cluster %s, left by a server that is gone", orphan)

            cpus = s.local_ray_cpus or os.cpu_count() or 1
            per_node = max(1, cpus // s.local_ray_nodes)
            nodes = [NodeSpec(per_node, {f"node_{i + 1}": 1.0}) for i in range(s.local_ray_nodes)]
            self._cluster = LocalCluster(Path(f"/tmp/aihub-ray-{os.getpid()}"), nodes)  # noqa: S108 - short: Ray's socket paths are limited
            self._cluster.start()
            address = self._cluster.address
            log.info("local Ray cluster of %d nodes (%d CPUs each) at %s for %d replicas", len(nodes), per_node, address, s.replicas)
        return url, address

    def _spawn(self, index: int, url: str, address: str, *, seed: bool) -> subprocess.Popen[bytes]:
        self.sockets[index].unlink(missing_ok=True)
        env = {
            **os.environ,
            "RAY_ADDRESS": address,
            "AIHUB_REPLICAS": "1",
            "AIHUB_LOCAL_RAY_NODES": "1",
            "AIHUB_ISOLATE": "false",
            "AIHUB_REST": "false",
            "AIHUB_GRPC_PORT": "0",
            "AIHUB_GRPC_UNIX_SOCKET": str(self.sockets[index]),
            "AIHUB_METRICS_UNIX_SOCKET": str(self.metrics_sockets[index]),
            "AIHUB_SERVER_ID": f"{socket.gethostname()}-replica-{index}",
        }
        if self._cluster is not None:  # its nodes run in this environment: nothing to ship, unless asked
            env.setdefault("AIHUB_SHIP_CODE", "never")
        command = [sys.executable, "-m", "server", *(["--seed-demo"] if seed else [])]
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which passes one SIGTERM on.
        passed = private.pipe_to_child({**self.secrets, "DATABASE_URL": url}, env)
        try:
            command, preexec = lifecycle.dying_with_parent(command)
            proc = subprocess.Popen(command, env=env, process_group=0, pass_fds=(passed,), preexec_fn=preexec)  # noqa: PLW1509 - prctl only
        finally:
            os.close(passed)
        log.info("replica %d started (pid %d) on %s", index, proc.pid, self.sockets[index])
        return proc

    def run(self) -> int:
        """Start everything, keep the replicas running until a signal, stop everything."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            url, address = self.start_shared()
            for i in range(len(self.procs)):
                self.procs[i] = self._spawn(i, url, address, seed=self.seed_demo and i == 0)
            if self.with_envoy and not self._start_envoy():
                return 1
            dead_since: dict[int, float] = {}
            while not self._stopping:
                for i, proc in enumerate(self.procs):
                    if proc is not None and proc.poll() is not None:
                        first = dead_since.setdefault(i, time.monotonic())
                        if time.monotonic() - first >= RESTART_SECONDS and not self._stopping:
                            log.warning("replica %d (pid %d) ended with code %s; starting it again", i, proc.pid, proc.returncode)
                            self.procs[i] = self._spawn(i, url, address, seed=False)
                            dead_since.pop(i)
                time.sleep(0.2)
            return 0
        finally:
            self._stop_all()

    def _start_envoy(self) -> bool:
        """Envoy in front of the replicas (this process is not behind a front): once the
        first replica answers."""

        s = self.settings
        while not accepts(self.sockets[0]):
            first = self.procs[0]
            if self._stopping or (first is not None and first.poll() is not None):
                return False
            time.sleep(0.2)
        self._envoy = envoy = front_envoy(s, self.sockets, self.metrics_sockets)
        envoy.start()
        banner(s, f"{s.grpc_host}:{s.grpc_port}", envoy.url if s.rest else None, replicas=len(self.sockets))
        return True

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping:  # a second Ctrl-C: the replicas stop without waiting for their drain
            for proc in self.procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        self._stopping = True

    def _stop_all(self) -> None:
        self._stopping = True
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)  # each drains (AIHUB_DRAIN_SECONDS), then hands back the rest
        deadline = time.monotonic() + self.settings.drain_seconds + 60
        for proc in live:
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._envoy is not None:
            self._envoy.stop()
        if self._cluster is not None:
            self._cluster.stop()
        if self._pg is not None:
            self._pg.stop()
