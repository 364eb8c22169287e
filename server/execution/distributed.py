"""Data-parallel training on the Ray cluster: trainers.ports.Distributor over a gang of Ray
actors, one per worker, in one placement group.

The job's attempt (a Ray task) cuts the fit part into shards (trainers.distributed.plan) and
puts each in the object store; worker ``r`` is handed only ``shard r``, so no worker receives
the whole frame. What every worker shares (the plan: the tune part, statistics, a bin
sample) is one object they all read. Workers are spread over the nodes (a SPREAD placement
group) with the CPUs, memory and GPUs of the job's ``ray_config``.

Each algorithm's collective is set up with its library's own API, as Ray Train's backends
do: LightGBM's network parameters (every worker's address and a free port of its node:
``machines``, ``local_listen_port``), XGBoost's tracker (``RabitTracker`` in the attempt,
``CommunicatorContext`` around each worker's training), a Torch process group (gloo on CPUs,
NCCL on GPUs; rank 0's node and a free port as the rendezvous), or nothing for an ensemble
(each worker grows a batch of trees).

Why not Ray Train: on this 2-core machine its start and end (a controller actor, the worker
group's start-up and polling, the report and checkpoint) cost 6-9 s before any training,
a no-op run of its trainers; the gang costs 1.7-2.8 s, so a 2-worker job's fixed cost drops
from ~15 s to a few (bench/README.md, issue 28). What Ray Train gave beyond the collective
set-up (restarts: we run with none; checkpoints on shared storage: the model comes back as
bytes instead) we do not need.

The attempt polls the first worker for its progress, so progress, placement and cancellation
work as for a single-node job. The actors are the attempt's own: when it stops (cancelled,
an error, or its process lost), they end with it, and so does their placement group.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.execution.adapters import DbDataSource
from server.execution.memory import MemoryGuard, worker_over
from server.execution.runtime import runtime
from trainers import algorithms
from trainers.algorithms import FittedModel
from trainers.algorithms.base import ENSEMBLE, LIGHTGBM_NETWORK, TORCH_DDP, XGBOOST_COLLECTIVE
from trainers.distributed import Shard, WorkerPlan, fit_worker
from trainers.errors import TrainingError
from trainers.ports import Level, Reporter
from trainers.shards import ShardRead, ShardWorker
from trainers.spec import TrainingSpec, WorkerRequest

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25
PLACEMENT_TIMEOUT = 60.0  # seconds for the workers' placement group: the dispatcher admitted it, so it fits
SHUTDOWN_SECONDS = 5.0


class DistributedTrainingFailed(TrainingError):
    """A worker failed or was lost; another attempt may run on what is left of the cluster."""

    reason = "TrainingError"
    retryable = True


def _free_port() -> int:
    """A port free now on this node (another process may take it before LightGBM or Torch
    binds it: the same race Ray Train's backends accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class _Worker:
    """One training worker: a Ray actor with the CPUs, memory and GPUs of one bundle. Its
    memory is watched from its start (MemoryGuard): reading and preparing a shard counts."""

    def __init__(self, rank: int, memory: int = 0) -> None:
        self.rank = rank
        self.memory = memory
        self.iteration = (0, 0)
        self.guard = MemoryGuard(memory, worker_over(rank, memory))
        self.shard: ShardWorker | None = None

    def where(self) -> tuple[str, str, int]:
        """This worker's node id, its address and a free port there."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), _free_port()

    def progress(self) -> tuple[int, int]:
        return self.iteration

    def open(self, spec: TrainingSpec, read: ShardRead, database_url: str, tenant_id: str) -> None:
        """This worker's shard, read through its own connection to the database (as the
        job's tenant: row-level security holds)."""
        rt = runtime()
        self.shard = ShardWorker(DbDataSource(rt, rt.engine(database_url), tenant_id), spec, read)

    def call(self, method: str, *args: Any) -> Any:
        """``ShardWorker.<method>(*args)`` on this worker's shard."""
        if self.shard is None:
            raise RuntimeError("the worker has no shard")
        try:
            return getattr(self.shard, method)(*args)
        finally:
            self.guard.sample()
            self.guard.check()

    def fit(self, plan: WorkerPlan, shard: Shard | None, backend: str, setup: Mapping[str, Any], keep: bool) -> dict[str, Any]:
        """Train this worker's part inside its collective (``shard``: the rows it was sent,
        else its own prepared shard's fit rows); the model's files when ``keep``."""
        last = 0.0
        guard = self.guard

        def on_iteration(done: int, total: int) -> None:
            nonlocal last
            guard.check()
            now = time.monotonic()
            if now - last >= POLL_SECONDS or done >= total:
                last = now
                self.iteration = (done, total)

        if shard is None:
            if self.shard is None:
                raise RuntimeError("the worker has no shard")
            shard = self.shard.shard()
        guard.sample()  # the shard is in: it may be over already
        guard.check()
        with _collective(backend, setup, self.rank, plan.workers):
            network = dict(setup.get("network", {}))
            if network:
                network["local_listen_port"] = setup["ports"][self.rank]
            model = fit_worker(plan, shard, rank=self.rank, network=network, on_iteration=on_iteration)
        guard.sample()
        files: dict[str, bytes] = {}
        if keep:
            with tempfile.TemporaryDirectory() as folder:
                model.save(Path(folder))
                files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return {
            "files": files,
            "best_iteration": model.best_iteration or 0,
            "device": str(getattr(model, "device", "cpu")),
            "peak_rss": guard.peak,
        }


@contextlib.contextmanager
def _collective(backend: str, setup: Mapping[str, Any], rank: int, size: int) -> Iterator[None]:
    """The library's collective around one worker's training (nothing for LightGBM: its
    network is in its parameters; nothing for an ensemble)."""
    if size > 1 and backend == XGBOOST_COLLECTIVE:
        import ray
        from xgboost.collective import CommunicatorContext

        # Ranks follow the task ids, sorted: the tracker was started with sortby="task".
        task_id = f"[xgboost.ray-rank={rank:08}]:{ray.get_runtime_context().get_actor_id()}"
        with CommunicatorContext(**setup["collective"], dmlc_task_id=task_id):
            yield
        return
    if size > 1 and backend == TORCH_DDP:
        import datetime

        import torch.distributed as dist

        address, port = setup["rendezvous"]
        dist.init_process_group(
            backend=setup["torch_backend"],
            init_method=f"tcp://{address}:{port}",
            rank=rank,
            world_size=size,
            timeout=datetime.timedelta(seconds=1800),
        )
        try:
            yield
        finally:
            dist.destroy_process_group()
        return
    yield


class _Tracker:
    """XGBoost's tracker for one run, in the attempt's process."""

    def __init__(self, workers: int) -> None:
        import ray
        from xgboost.tracker import RabitTracker

        self.tracker = RabitTracker(n_workers=workers, host_ip=ray.util.get_node_ip_address(), sortby="task")
        self.tracker.start()
        self.thread = threading.Thread(target=self.tracker.wait_for, name="xgboost-tracker", daemon=True)
        self.thread.start()
        self.args = {"n_workers": workers, **self.tracker.worker_args()}

    def close(self) -> None:
        self.thread.join(timeout=SHUTDOWN_SECONDS)
        if self.thread.is_alive():
            log.warning("XGBoost's tracker did not stop within %.0f s; its thread is left to end with the attempt", SHUTDOWN_SECONDS)


def _failure(exc: BaseException, rank: int | None) -> TrainingError:
    """What the job's error says: the worker's own error, or that a worker (its process or
    its node) was lost."""
    import ray

    who = "a training worker" if rank is None else f"training worker {rank}"
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, TrainingError):
            return cause
        text = str(cause).strip().splitlines()
        return DistributedTrainingFailed(f"{who} failed: {type(cause).__name__}: {text[-1] if text else ''}"[:500])
    if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.NodeDiedError | ray.exceptions.ObjectLostError):
        return DistributedTrainingFailed(f"{who} was lost (its process or node died): {type(exc).__name__}")
    return DistributedTrainingFailed(f"distributed training failed: {type(exc).__name__}: {str(exc).strip()[:300]}")


@dataclass(frozen=True)
class RayDistributor:
    """trainers.ports.Distributor on the Ray cluster, for one attempt: ``database_url`` and
    ``tenant_id`` are where workers that prepare their own shards read them."""

    request: WorkerRequest
    database_url: str = ""
    tenant_id: str = ""

    @property
    def prepares_shards(self) -> bool:
        """Workers read their own shards when they know the database (the service's jobs);
        a caller that hands the pipeline a frame (bench.distributed) ships shards of it."""
        return bool(self.database_url)

    def fit(self, plan: WorkerPlan, shards: Sequence[Shard], reporter: Reporter, on_iteration: Callable[[int, int], None]) -> FittedModel:
        with _Gang(self.request, len(shards), reporter) as gang:
            return gang.train(plan, shards, reporter, on_iteration)

    @contextlib.contextmanager
    def gang(self, spec: TrainingSpec, reads: Sequence[ShardRead], reporter: Reporter) -> Iterator[_Gang]:
        import ray

        with _Gang(self.request, len(reads), reporter) as gang:
            try:
                ray.get([w.open.remote(spec, read, self.database_url, self.tenant_id) for w, read in zip(gang.workers, reads, strict=True)])
            except ray.exceptions.RayError as exc:
                raise _failure(exc, None) from None
            yield gang


class _Gang:
    """The workers of one attempt (trainers.ports.Gang): one actor per bundle of a SPREAD
    placement group, ended with it."""

    def __init__(self, request: WorkerRequest, size: int, reporter: Reporter) -> None:
        self.request, self.size, self.reporter = request, size, reporter
        self.workers: list[Any] = []
        self.group: Any = None

    def __enter__(self) -> _Gang:
        import ray
        from ray.util.placement_group import placement_group

        bundle: dict[str, float] = {"CPU": self.request.cpus}
        if self.request.memory:
            bundle["memory"] = float(self.request.memory)
        if self.request.gpus:
            bundle["GPU"] = self.request.gpus
        self.group = placement_group([bundle] * self.size, strategy="SPREAD")
        try:
            try:
                ray.get(self.group.ready(), timeout=PLACEMENT_TIMEOUT)
            except ray.exceptions.GetTimeoutError:
                raise DistributedTrainingFailed(
                    f"the {self.size} workers could not be placed within {PLACEMENT_TIMEOUT:.0f} s ({self.request.describe()})"
                ) from None
            self.workers = self._start()
            self.reporter.log(Level.INFO, _placement(self._gather()))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for w in self.workers:
            ray.kill(w)
        if self.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self.group)

    def _start(self) -> list[Any]:
        """One actor per bundle of the placement group, rank ``r`` in bundle ``r``."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options: dict[str, Any] = {"num_cpus": self.request.cpus, "max_concurrency": 2, "max_restarts": 0}
        if self.request.gpus:
            options["num_gpus"] = self.request.gpus
        if self.request.memory:
            options["memory"] = self.request.memory
        actor = ray.remote(_Worker)
        strategy = PlacementGroupSchedulingStrategy
        return [
            actor.options(**options, scheduling_strategy=strategy(self.group, placement_group_bundle_index=rank)).remote(
                rank, self.request.memory
            )
            for rank in range(self.size)
        ]

    def _gather(self) -> list[tuple[str, str, int]]:
        import ray

        try:
            return list(ray.get([w.where.remote() for w in self.workers], timeout=PLACEMENT_TIMEOUT))
        except ray.exceptions.RayError as exc:
            raise _failure(exc, None) from None

    def each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """trainers.ports.Gang.each: waited on in short steps, so that the attempt's guard
        can stop it."""
        pending = {w.call.remote(method, *a): rank for rank, (w, a) in enumerate(zip(self.workers, args, strict=True))}
        return self._follow(pending, None)

    def fit(self, plan: WorkerPlan, reporter: Reporter, on_iteration: Callable[[int, int], None]) -> FittedModel:
        return self.train(plan, None, reporter, on_iteration)

    def train(
        self, plan: WorkerPlan, shards: Sequence[Shard] | None, reporter: Reporter, on_iteration: Callable[[int, int], None]
    ) -> FittedModel:
        """Train on the shards sent (each worker gets only its own), or on those the workers
        prepared (``shards`` None)."""
        import ray

        algorithm = algorithms.get(plan.algorithm)
        backend = algorithm.data_parallel
        tracker = _Tracker(self.size) if backend == XGBOOST_COLLECTIVE and self.size > 1 else None
        try:
            setup = _setup(backend, self._gather(), tracker, self.request)  # free ports now, as training starts
            shared = ray.put(plan)
            pending = {
                w.fit.remote(
                    shared, None if shards is None else ray.put(shards[rank]), backend, setup, backend == ENSEMBLE or rank == 0
                ): rank
                for rank, w in enumerate(self.workers)
            }
            results = self._follow(pending, on_iteration)
        finally:
            if tracker is not None:
                tracker.close()
        peaks = ", ".join(f"{r['peak_rss'] / 2**30:.2f}" for r in results)
        reporter.log(Level.INFO, f"training: the workers' peak memory: {peaks} GiB")
        if self.request.gpus and results[0]["device"] != "cuda":
            reporter.log(Level.WARNING, "use_gpu was asked for but the workers saw no GPU: trained on the CPU")
        return _load(algorithm, results, plan)

    def _follow(self, pending: dict[Any, int], on_iteration: Callable[[int, int], None] | None) -> list[Any]:
        """Wait until every worker is done (relaying the first worker's progress to
        ``on_iteration``); their results in rank order. The first failure ends the run (the
        others may wait on it forever)."""
        import ray

        results: dict[int, Any] = {}
        waiting = list(pending)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_SECONDS, fetch_local=False)
            for ref in ready:
                try:
                    results[pending[ref]] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise _failure(exc, pending[ref]) from None
            if waiting and on_iteration is not None:
                with contextlib.suppress(ray.exceptions.RayError):  # a lost first worker shows in its result
                    done, total = ray.get(self.workers[0].progress.remote(), timeout=30)
                    if total:
                        on_iteration(done, total)
        return [results[rank] for rank in sorted(results)]


def _setup(backend: str, where: Sequence[tuple[str, str, int]], tracker: _Tracker | None, request: WorkerRequest) -> dict[str, Any]:
    """What each worker needs to join the collective of ``backend``."""
    setup: dict[str, Any] = {"ports": [port for _, _, port in where]}
    if backend == LIGHTGBM_NETWORK and len(where) > 1:
        setup["network"] = {"num_machines": len(where), "machines": ",".join(f"{ip}:{port}" for _, ip, port in where)}
    if tracker is not None:
        setup["collective"] = tracker.args
    if backend == TORCH_DDP:
        setup["rendezvous"] = (where[0][1], where[0][2])
        setup["torch_backend"] = "nccl" if request.gpus else "gloo"
    return setup


def _placement(where: Sequence[tuple[str, str, int]]) -> str:
    nodes: dict[str, list[int]] = {}
    addresses: dict[str, str] = {}
    for rank, (node_id, address, _) in enumerate(where):
        nodes.setdefault(node_id, []).append(rank)
        addresses[node_id] = address
    described = "; ".join(
        f"node {node_id[:12]} ({addresses[node_id]}): workers {', '.join(map(str, ranks))}" for node_id, ranks in nodes.items()
    )
    return f"training: {len(where)} workers on {len(nodes)} node{'s' if len(nodes) != 1 else ''}: {described}"


def _load(algorithm: algorithms.Algorithm, results: Sequence[Mapping[str, Any]], plan: WorkerPlan) -> FittedModel:
    task = plan.options.task
    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for rank, result in enumerate(results):
            if not result["files"]:
                continue
            part = Path(folder) / f"worker-{rank}"
            part.mkdir()
            for name, data in result["files"].items():
                (part / name).write_bytes(data)
            files = sorted(p for p in part.iterdir() if p.is_file())
            parts.append(algorithm.load(files[0], task))
    if not parts:
        raise DistributedTrainingFailed("the workers returned no model")
    model = algorithm.combine(parts)
    best = int(results[0].get("best_iteration") or 0)
    if best and hasattr(model, "best_iteration"):
        model.best_iteration = best  # type: ignore[misc]
    return model
