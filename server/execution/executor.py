"""Runs claimed jobs as Ray tasks (server/execution/tasks.py): a local Ray started here, or
the cluster at RAY_ADDRESS. Also reads the cluster's nodes and resources."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import pandas as pd

from server.execution import shipping
from server.execution.forecasts import ModelWorker
from server.execution.local_cluster import LocalCluster, NodeSpec, ray_temp, stop_orphans
from server.execution.payloads import DetectPayload, EvaluatePayload, ForecastPayload, JobPayload, Outcome, WorkerLost
from server.execution.tasks import evaluate_model, run_attempt
from storage.records import RayCluster, WorkerNode
from trainers import algorithms
from trainers.errors import OutOfMemory, first_line
from trainers.spec import TrainingSpec

log = logging.getLogger(__name__)
RESOURCE_KINDS = ("CPU", "GPU", "memory")


class Executor(Protocol):
    """What the dispatcher, the cluster registry and model evaluation use: RayExecutor in
    this process (tests, tools), or server/execution/driver.py's DriverExecutor, which runs
    it in a child process that survives the loss of the cluster's head."""

    @property
    def address(self) -> str | None: ...

    @property
    def job_cpus(self) -> int: ...

    @property
    def cluster_id(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def capacity(self) -> int: ...

    def totals(self) -> dict[str, float]: ...

    def demand(self, spec: TrainingSpec, totals: dict[str, float]) -> dict[str, float]: ...

    def cluster(self) -> RayCluster: ...

    async def run(self, payload: JobPayload) -> Outcome: ...

    async def evaluate(self, payload: EvaluatePayload) -> dict[str, float]: ...

    async def forecast(self, payload: ForecastPayload) -> pd.DataFrame: ...

    async def detect(self, payload: DetectPayload) -> tuple[pd.DataFrame, float]: ...


@dataclass
class RayExecutor:
    address: str | None
    job_cpus: int = 1
    local_cpus: int = 0
    temp_dir: str | None = None
    local_nodes: int = 1  # > 1: a local multi-node cluster (server/execution/local_cluster.py)
    model_workers: int = 2  # actors that forecast and detect, each keeping its recent versions loaded
    ship_code: shipping.ShipCode = "auto"  # whether our packages go to the nodes with the jobs (server/execution/shipping.py)

    def __post_init__(self) -> None:
        self._remote: Any = None  # the Ray remote functions, once started
        self._evaluate: Any = None
        self._workers: dict[int, Any] = {}  # slot -> ModelWorker actor, made on first use
        self._started_ray = False
        self._cluster: LocalCluster | None = None

    def start(self) -> None:
        """Connect to (or start) Ray. Blocking; call from a thread at start-up."""
        if self.address is None:
            # A local Ray binds its servers to 127.0.0.1 only when Ray believes it is not
            # a cluster node (else it resolves localhost to the machine's public address).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        address = self.address
        if address is None and self.local_nodes > 1 and self._cluster is None:
            address = self._start_local_cluster()  # before Ray is imported: it reads RAY_AUTH_MODE then
        import ray

        if not ray.is_initialized():
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if shipping.wanted(self.ship_code, self.address):  # not to a local cluster of this environment's
                kwargs["runtime_env"] = shipping.runtime_env()
                shipped = ", ".join(Path(p).name for p in kwargs["runtime_env"]["py_modules"])
                log.info("shipping %s to the Ray nodes with the jobs (AIHUB_SHIP_CODE=%s)", shipped, self.ship_code)
            if address:
                kwargs["address"] = address
                self._started_ray = self._cluster is not None
            else:
                if self.local_cpus:
                    kwargs["num_cpus"] = self.local_cpus
                # Not Ray's default /tmp/ray (0777, its files 0644: every tenant's log lines).
                kwargs["_temp_dir"] = str(ray_temp(self._local_temp_dir()))
                self._started_ray = True
            try:
                ray.init(**kwargs)
            except Exception:
                self.stop()  # the local cluster it may have started
                raise
        self._remote = ray.remote(run_attempt)
        self._evaluate = ray.remote(evaluate_model).options(num_cpus=self.job_cpus, max_retries=0, name="aihub-evaluate-model")

    @property
    def local_cluster(self) -> LocalCluster | None:
        """The local multi-node cluster this executor started, if any."""
        return self._cluster

    def _local_temp_dir(self) -> Path:
        return Path(self.temp_dir or f"/tmp/aihub-ray-{os.getpid()}")  # noqa: S108 - short: Ray's socket paths are limited to 107 bytes

    def _start_local_cluster(self) -> str:
        cpus = self.local_cpus or os.cpu_count() or 1
        per_node = max(1, cpus // self.local_nodes)
        temp_dir = self._local_temp_dir()
        nodes = [NodeSpec(per_node, {f"node_{i + 1}": 1.0}) for i in range(self.local_nodes)]
        for orphan in stop_orphans():
            log.warning("ended the local Ray cluster %s, left by a server that is gone", orphan)
        self._cluster = LocalCluster(temp_dir, nodes)
        self._cluster.start()
        log.info("local Ray cluster of %d nodes (%d CPUs each) at %s", self.local_nodes, per_node, self._cluster.address)
        return self._cluster.address

    def stop(self) -> None:
        import ray

        self._workers.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            if self._cluster is None and self.address is None and not self.temp_dir:
                shutil.rmtree(self._local_temp_dir(), ignore_errors=True)  # its sessions and logs go with it
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    @property
    def cluster_id(self) -> str:
        """ "local" for the Ray this server started, else the address it was given."""
        return f"ray:{self.address}" if self.address else "local"

    def capacity(self) -> int:
        """How many single-node jobs the cluster's CPUs allow at once."""
        import ray

        cpus = ray.cluster_resources().get("CPU", 0)
        return max(1, int(cpus // self.job_cpus))

    def totals(self) -> dict[str, float]:
        """The CPUs, GPUs and memory (bytes) of the cluster's alive nodes."""
        import ray

        resources = ray.cluster_resources()
        return {kind: float(resources.get(kind, 0.0)) for kind in RESOURCE_KINDS}

    def demand(self, spec: TrainingSpec, totals: dict[str, float]) -> dict[str, float]:
        """What a job holds while it runs: a distributed job its workers, a search its
        concurrent trials (at most the whole cluster's CPUs: more trials wait their turn in
        Ray), any other job one task's CPUs (and a GPU when it trains on one)."""
        if spec.workers:
            w = spec.workers
            return {"CPU": w.workers * w.cpus, "GPU": w.workers * w.gpus, "memory": float(w.workers * w.memory)}
        if spec.tuning:
            trials = float(spec.tuning.max_concurrent_trials * self.job_cpus)
            return {"CPU": max(float(self.job_cpus), min(trials, totals.get("CPU", 0.0))), "GPU": 0.0, "memory": 0.0}
        gpu = 1.0 if spec.use_gpu and algorithms.get(spec.algorithm).supports_gpu and totals.get("GPU", 0.0) >= 1 else 0.0
        return {"CPU": float(self.job_cpus), "GPU": gpu, "memory": 0.0}

    async def run(self, payload: JobPayload) -> Outcome:
        """Run one attempt on Ray and wait for it. Raises ray's errors when the task
        died (worker crash, node loss). There is no cancel here: a cancelled attempt's
        task stops itself (server/execution/guard.py), since ray.cancel(force=True) can crash the
        calling process when the task is just returning."""
        import ray

        options: dict[str, Any] = {"num_cpus": self.job_cpus, "max_retries": 0, "name": "aihub-training-job"}
        if payload.spec.tuning or payload.spec.workers:
            # A search's trials, or a distributed job's workers, take the CPUs; the attempt
            # itself only drives them, so it holds none (else two such jobs could each hold
            # a CPU their own trials or workers wait for).
            options["num_cpus"] = 0
        if (
            payload.spec.use_gpu
            and not payload.spec.workers
            and algorithms.get(payload.spec.algorithm).supports_gpu
            and ray.cluster_resources().get("GPU", 0) >= 1
        ):
            options["num_gpus"] = 1  # else the job trains on the CPU and logs that it did
        try:
            return await self._remote.options(**options).remote(payload)
        except ray.exceptions.OutOfMemoryError as exc:  # Ray's memory monitor killed the worker
            raise OutOfMemory(
                f"the attempt's Ray worker was killed by Ray's memory monitor: its node ran low on memory ({first_line(exc)}); "
                + OutOfMemory.REMEDY,
                details={"resource": "memory"},
            ) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError) as exc:
            raise WorkerLost(f"the attempt's Ray worker process died ({type(exc).__name__}: {first_line(exc)})") from None

    async def evaluate(self, payload: EvaluatePayload) -> dict[str, float]:
        """Score a model version on Ray; raises the task's error (e.g. DataLoadError). When
        the caller gives up (the request's deadline), the task is cancelled too."""
        import ray

        ref = self._evaluate.remote(payload)
        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # not force: the scoring stops with a KeyboardInterrupt in its worker
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

    def _worker(self, slot: int) -> Any:
        import ray

        if slot not in self._workers:
            # No CPU held: a forecast is short, and an actor holding one would take it from
            # the jobs for as long as the server runs.
            worker = ray.remote(ModelWorker).options(num_cpus=0, max_restarts=-1, max_task_retries=0, name=None)
            self._workers[slot] = worker.remote()
        return self._workers[slot]

    async def _on_worker(self, method: str, payload: ForecastPayload | DetectPayload) -> Any:
        """Call ``method`` on the actor of the version's slot (its cache holds the version after
        the first call); a dead actor is replaced and the call, which writes nothing, made
        once more. Raises the call's error (e.g. DataLoadError)."""
        import ray

        slot = zlib.crc32(payload.artifact_path.encode()) % max(1, self.model_workers)
        for last in (False, True):
            ref = getattr(self._worker(slot), method).remote(payload)
            try:
                return await ref
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
            except ray.exceptions.RayActorError:
                self._workers.pop(slot, None)
                if last:
                    raise
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
        raise AssertionError("unreachable")

    async def forecast(self, payload: ForecastPayload) -> pd.DataFrame:
        return cast(pd.DataFrame, await self._on_worker("forecast", payload))

    async def detect(self, payload: DetectPayload) -> tuple[pd.DataFrame, float]:
        return cast(tuple[pd.DataFrame, float], await self._on_worker("detect", payload))

    def cluster(self) -> RayCluster:
        import ray
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()  # alive nodes only
        nodes = []
        for n in ray.nodes():
            resources = {k: float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
            up = bool(n.get("Alive"))
            left = free.get(n["NodeID"], {}) if up else {}
            in_use = {k: max(0.0, v - float(left.get(k, 0.0))) for k, v in resources.items() if k in RESOURCE_KINDS} if up else {}
            nodes.append(WorkerNode(n["NodeID"], n.get("NodeManagerAddress", ""), "ALIVE" if up else "DEAD", resources, in_use))
        total = {k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
        available = {k: float(v) for k, v in ray.available_resources().items() if not k.startswith("node:")}
        alive = sum(1 for n in nodes if n.status == "ALIVE")
        return RayCluster(
            cluster_id=self.cluster_id,
            address=self.address or "local",
            status="RUNNING" if alive else "DOWN",
            num_workers=alive,
            resources=total,
            available_resources=available,
            nodes=tuple(nodes),
        )
