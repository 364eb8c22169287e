"""The Ray driver in a process of its own, restarted when it ends.

A Ray driver does not survive its cluster's head: when the head (its GCS) stays unreachable,
Ray's core worker ends the driver's whole process. So the server is never a Ray driver
itself: ``DriverExecutor`` runs a ``RayExecutor`` in a child process and forwards every
call to it over a pipe. When the child ends (the head went away, or it crashed), the calls
in flight fail with ``DriverLost``, the cluster reads as DOWN, the dispatcher hands its
running jobs back to the queue (they wait PENDING instead of failing), and a new child is
started every ``restart_seconds`` until one connects; dispatch then resumes by itself.
The API keeps serving throughout: nothing it needs lives in the child.

A local Ray (no RAY_ADDRESS) is watched from inside the child: when its raylet or GCS dies
(killed, or taken down with Ray's dashboard agent), the child logs a WARNING naming what
died, tells the parent, ends that Ray's processes (its job workers too, which the dead
raylet would leave behind) and itself; the parent then hands the running jobs back (not one
of their retries) and starts a new local Ray as it does for a lost head. In a local
multi-node cluster (AIHUB_LOCAL_RAY_NODES > 1) a dead node other than the head is started
again in place; the jobs it ran come back as lost workers (queued again, not retried).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pandas as pd

from server import lifecycle, observability
from server.execution.executor import RayExecutor
from server.execution.payloads import DetectPayload, EvaluatePayload, ForecastPayload, JobPayload, Outcome
from server.execution.shipping import ShipCode
from server.observability import LogFormat
from storage.records import RayCluster
from trainers.errors import TrainingError
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)
CALL_TIMEOUT = 30.0  # seconds a quick call (cluster, totals) may take
HEAD_TIMEOUT = 15  # seconds without the cluster's head after which the driver process ends
NODE_CHECK_SECONDS = 1.0  # how often a local Ray's raylet and GCS are looked at
NODE_LOST = 0  # the call id of the child's "the local Ray node died" notice


class DriverLost(RuntimeError):
    """The Ray driver process ended (its cluster's head went away, or it crashed)."""


def _serve(conn: Connection, settings: dict[str, Any], log_format: LogFormat, log_level: str) -> None:  # noqa: PLR0915 - one small server, read top to bottom
    """The child: start Ray (connect, or start a local one), then answer calls until the
    parent goes away or asks it to stop."""
    # A process group of its own, before Ray starts its processes (they inherit it): a
    # terminal's Ctrl-C goes to the server, which drains, not to the driver and its workers.
    os.setpgid(0, 0)
    # A driver whose head is gone ends itself after this long (Ray's default is 60 s); a new
    # one is then tried every restart_seconds.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(HEAD_TIMEOUT))
    observability.configure(log_format, log_level, loggers=("server", "trainers"))
    executor = RayExecutor(**settings)
    try:
        executor.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries later
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    loop = asyncio.new_event_loop()
    sending = threading.Lock()
    tasks: dict[int, asyncio.Task[Any]] = {}
    watch: _NodeWatch | _ClusterWatch | None = None  # a local Ray's (set below)

    def send(call_id: int, status: str, value: Any) -> None:
        # Errors travel as our own error tree (the caller maps it) or as their words: an
        # error class of Ray's need not load in the server.
        if status == "error" and not isinstance(value, TrainingError | asyncio.CancelledError):
            value = RuntimeError(f"{type(value).__name__}: {value}")
        with sending:
            try:
                conn.send((call_id, status, value))
            except Exception as exc:  # noqa: BLE001 - a result that does not pickle: its words instead
                conn.send((call_id, "error", RuntimeError(f"the Ray driver could not send its answer: {exc}")))

    async def call(call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            if method in ("run", "evaluate", "forecast", "detect"):
                result = await getattr(executor, method)(*args)
            else:
                result = await asyncio.to_thread(getattr(executor, method), *args)
            send(call_id, "ok", result)
        except asyncio.CancelledError:
            send(call_id, "error", asyncio.CancelledError())
        except Exception as exc:  # noqa: BLE001 - the caller gets the error
            if watch is not None and method in ("run", "evaluate", "forecast", "detect"):
                # Its Ray worker may have died with the node: then everything ends here and
                # the caller sees the cluster lost, not this one call's error.
                await asyncio.to_thread(watch.check)
            send(call_id, "error", exc)
        finally:
            tasks.pop(call_id, None)

    def receive() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop",)
            if message[0] == "stop":
                loop.call_soon_threadsafe(loop.stop)
                return
            if message[0] == "cancel":

                def cancel(cid: int = message[1]) -> None:
                    if cid in tasks:
                        tasks[cid].cancel()

                loop.call_soon_threadsafe(cancel)
                continue
            call_id, method, args = message

            def start(cid: int = call_id, m: str = method, a: tuple[Any, ...] = args) -> None:
                tasks[cid] = loop.create_task(call(cid, m, a))

            loop.call_soon_threadsafe(start)

    threading.Thread(target=receive, name="aihub-driver-receive", daemon=True).start()
    stopping = threading.Event()
    if settings["address"] is None:

        def lost(why: str) -> None:
            with sending, contextlib.suppress(Exception):
                conn.send((NODE_LOST, "lost", why))

        kind = _NodeWatch if settings["local_nodes"] <= 1 else _ClusterWatch
        watch = kind(executor, lost, stopping)
        threading.Thread(target=watch.run, name="aihub-ray-node-watch", daemon=True).start()
    try:
        loop.run_forever()
    finally:
        stopping.set()  # Ray's processes end now on purpose: not a node to replace
        executor.stop()
        # Ray's helpers of a local Ray (dashboard and runtime-env agents) outlive ray.shutdown
        # by up to a minute; the server that started them is gone or going: they go now.
        lifecycle.end_descendants(timeout=3)


class _NodeWatch:
    """In the child, for the local Ray it started: end everything when its raylet or GCS
    dies (see the module's docstring). ``run`` looks every NODE_CHECK_SECONDS; ``check``
    looks now, for an attempt whose Ray worker just died: a raylet's death fails the
    tasks it ran at once, before the next look, and such an attempt was lost with its
    cluster (handed back), not with a worker of a cluster that lives on."""

    def __init__(self, executor: RayExecutor, lost: Callable[[str], None], stopping: threading.Event) -> None:
        import psutil

        self.executor, self.lost, self.stopping = executor, lost, stopping
        self.watched = [p for p in psutil.Process().children(recursive=True) if p.name() in ("raylet", "gcs_server")]
        self.names = {p.pid: p.name() for p in self.watched}
        self.workers: dict[int, psutil.Process] = {}  # the raylet's children (job workers, agents): they outlive it
        self._ending = threading.Lock()

    @staticmethod
    def _alive(proc: Any) -> bool:
        import psutil

        try:
            return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def run(self) -> None:
        import psutil

        while not self.stopping.wait(NODE_CHECK_SECONDS):
            if self.check():
                continue
            now: dict[int, psutil.Process] = {}
            for proc in self.watched:
                with contextlib.suppress(psutil.Error):
                    now.update({w.pid: w for w in proc.children()})
            self.workers = now  # as last seen alive: the dead raylet's children are no longer found by it

    def check(self) -> bool:
        """False while the node lives; else it ends this Ray and this process (never returns),
        or True when Ray is being stopped on purpose."""
        dead = [p for p in self.watched if not self._alive(p)]
        if not dead:
            return False
        if self.stopping.is_set():
            return True
        self._end(f"the local Ray node's {self.names[dead[0].pid]} (pid {dead[0].pid}) died")
        return True

    def _end(self, why: str) -> None:
        import psutil

        with self._ending:  # the watch's thread and a failed call may both see it
            log.warning("%s; starting a new local Ray: its running jobs go back to the queue (not one of their retries)", why)
            self.lost(why)
            for proc in self.workers.values():
                with contextlib.suppress(psutil.Error):
                    if proc.is_running():
                        proc.kill()
            shutil.rmtree(self.executor._local_temp_dir(), ignore_errors=True)  # the session this child made
            os.killpg(0, signal.SIGKILL)  # the GCS, raylet, agents and this process: one process group (see _serve)


class _ClusterWatch:
    """In the child, for the local multi-node cluster it started (AIHUB_LOCAL_RAY_NODES > 1):
    a node whose raylet dies is started again (Ray hands the jobs it ran back as lost
    workers: they are queued again, not retried); the head's death ends the whole cluster
    and this process, and the server starts a new one, as for a single local node.
    ``check`` looks at the head now (see _NodeWatch)."""

    def __init__(self, executor: RayExecutor, lost: Callable[[str], None], stopping: threading.Event) -> None:
        self.cluster, self.lost, self.stopping = executor.local_cluster, lost, stopping
        self._ending = threading.Lock()

    def run(self) -> None:
        if self.cluster is None:
            return
        while not self.stopping.wait(NODE_CHECK_SECONDS):
            dead = self.cluster.dead_nodes()
            if not dead or self.stopping.is_set() or self.check():
                continue
            for node in dead:
                name = ", ".join(node.resources) or "a node"
                log.warning("the local Ray cluster's node %s died (its raylet is gone); starting it again", name)
                try:
                    self.cluster.start_node(node)
                except Exception:
                    log.exception("the local Ray cluster's node %s could not be started again; trying again", name)
                else:
                    log.warning("the local Ray cluster's node %s is running again", name)

    def check(self) -> bool:
        """False while the head lives; else it ends the cluster and this process (never
        returns), or True when Ray is being stopped on purpose."""
        if self.cluster is None or self.cluster.nodes[0] not in self.cluster.dead_nodes():
            return False
        if self.stopping.is_set():
            return True
        with self._ending:
            why = "the local Ray cluster's head node (its raylet) died"
            log.warning("%s; starting a new local cluster: its running jobs go back to the queue (not one of their retries)", why)
            self.lost(why)
            self.cluster.stop()  # every node: they run in sessions of their own
            os.killpg(0, signal.SIGKILL)
        return True


class DriverExecutor:
    """RayExecutor's interface, served by a child process (see the module's docstring)."""

    def __init__(
        self,
        address: str | None,
        job_cpus: int = 1,
        local_cpus: int = 0,
        local_nodes: int = 1,
        *,
        ship_code: ShipCode = "auto",
        restart_seconds: float = 5.0,
        start_timeout: float = 180.0,
        log_format: LogFormat = "text",
        log_level: str = "INFO",
    ) -> None:
        self.logging = (log_format, log_level)  # the driver process logs as the server does
        self.settings = {
            "address": address,
            "job_cpus": job_cpus,
            "local_cpus": local_cpus,
            "local_nodes": local_nodes,
            "ship_code": ship_code,
        }
        self.local = RayExecutor(address, job_cpus=job_cpus, local_cpus=local_cpus, local_nodes=local_nodes)  # never started: names, demand
        self.restart_seconds = restart_seconds
        self.start_timeout = start_timeout
        self.on_lost: list[Callable[[], None]] = []  # called (from a thread) when a driver ends
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.last_error = "not started"

    # --- what RayExecutor has without Ray -----------------------------------------------------
    @property
    def address(self) -> str | None:
        return self.local.address

    @property
    def job_cpus(self) -> int:
        return self.local.job_cpus

    @property
    def cluster_id(self) -> str:
        return self.local.cluster_id

    def demand(self, spec: TrainingSpec, totals: dict[str, float]) -> dict[str, float]:
        return self.local.demand(spec, totals)

    # --- the child --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the driver and wait until it is connected. A cluster at ``address`` that is
        not reachable now does not stop the server (it is DOWN until it is); a local Ray
        that cannot start does."""
        connected = self._spawn()
        if not connected and self.address is None:
            raise RuntimeError(f"the local Ray did not start: {self.last_error}")
        if not connected:
            log.warning("Ray at %s unreachable (%s); retrying every %.0f s", self.address, self.last_error, self.restart_seconds)
        self._supervisor = threading.Thread(target=self._supervise, name="aihub-driver-supervisor", daemon=True)
        self._supervisor.start()

    def _spawn(self) -> bool:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, self.settings, *self.logging), name="aihub-ray-driver", daemon=True)
        process.start()
        child.close()
        deadline = time.monotonic() + self.start_timeout
        while not parent.poll(0.5):
            if not process.is_alive() or time.monotonic() > deadline or self._stopping.is_set():
                self.last_error = "the driver process ended while starting" if not process.is_alive() else "it did not start in time"
                process.kill()
                return False
        try:
            kind, detail = parent.recv()
        except (EOFError, OSError):
            kind, detail = "failed", "the driver process ended while starting"
        if kind != "ready":
            self.last_error = str(detail)
            process.join(5)
            if process.is_alive():
                process.kill()
            return False
        with self._lock:
            self._conn, self._process = parent, process
        threading.Thread(target=self._receive, args=(parent,), name="aihub-driver-results", daemon=True).start()
        log.info("Ray driver started (pid %d)", process.pid)
        return True

    def _receive(self, conn: Connection) -> None:
        node_lost = ""
        while True:
            try:
                call_id, status, value = conn.recv()
            except (EOFError, OSError):
                break
            if call_id == NODE_LOST:
                node_lost = str(value)
                continue
            with self._lock:
                future = self._pending.pop(call_id, None)
            if future is None or future.done():
                continue
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value)
        self._lost(node_lost or "the Ray driver process ended (its cluster's head is gone, or it crashed)")

    def _lost(self, why: str) -> None:
        with self._lock:
            if self._conn is None:
                return
            self._conn, process = None, self._process
            pending, self._pending = self._pending, {}
        self.last_error = why
        for future in pending.values():
            if not future.done():
                future.set_exception(DriverLost(why))
        if not self._stopping.is_set():
            log.error("%s; jobs wait until a new driver connects", why)
            for callback in self.on_lost:
                callback()
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()

    def _supervise(self) -> None:
        while not self._stopping.wait(self.restart_seconds):
            if self._conn is not None and self._process is not None and not self._process.is_alive():
                self._lost("the Ray driver process ended (its cluster's head is gone, or it crashed)")
            if self._conn is None and not self._stopping.is_set() and self._spawn():
                log.info("Ray is back: dispatch resumes")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            conn, process = self._conn, self._process
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        if process is not None:
            process.join(30)
            if process.is_alive():
                process.kill()

    # --- calls ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> tuple[int, concurrent.futures.Future[Any]]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            conn = self._conn
            if conn is None:
                raise DriverLost(f"Ray is not connected: {self.last_error}")
            call_id = next(self._ids)
            self._pending[call_id] = future
            try:
                conn.send((call_id, method, args))
            except OSError as exc:
                self._pending.pop(call_id, None)
                raise DriverLost(f"the Ray driver process is gone: {exc}") from None
        return call_id, future

    def _sync(self, method: str, *args: Any) -> Any:
        _, future = self._call(method, *args)
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise DriverLost(f"Ray did not answer {method} within {CALL_TIMEOUT:.0f} s") from None

    async def _async(self, method: str, *args: Any) -> Any:
        call_id, future = self._call(method, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            with self._lock:
                conn = self._conn
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.send(("cancel", call_id))
            raise

    def cluster(self) -> RayCluster:
        return self._sync("cluster")

    def totals(self) -> dict[str, float]:
        return self._sync("totals")

    def capacity(self) -> int:
        return self._sync("capacity")

    async def run(self, payload: JobPayload) -> Outcome:
        return await self._async("run", payload)

    async def evaluate(self, payload: EvaluatePayload) -> dict[str, float]:
        return await self._async("evaluate", payload)

    async def forecast(self, payload: ForecastPayload) -> pd.DataFrame:
        return await self._async("forecast", payload)

    async def detect(self, payload: DetectPayload) -> tuple[pd.DataFrame, float]:
        return await self._async("detect", payload)
