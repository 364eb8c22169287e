"""Data-parallel training on the Ray cluster: trainers.ports.Distributor over Ray Train.

The job's attempt (a Ray task) cuts the fit part into shards (trainers.distributed.plan)
and makes each shard a Ray Data dataset of its own (``shard_<r>``, one block in the object
store, not split further); worker ``r`` reads only ``shard_<r>`` through Ray Train's
``get_dataset_shard``, so no worker receives the whole frame. What every worker shares
(the plan: the tune part, statistics, a bin sample) is one object it fetches. The trainer is the one the algorithm's
``data_parallel`` names: Ray Train's LightGBM trainer (it sets up LightGBM's network),
its XGBoost trainer (XGBoost's collective), its Torch trainer (a gloo or NCCL process
group for DDP), or the plain data-parallel trainer for an ensemble (each worker grows a
batch of trees). Workers are spread over the nodes (placement SPREAD) with the CPUs,
memory and GPUs of the job's ``ray_config``.

A small actor (``_Run``, no CPU) runs the Ray Train controller and hears the workers: where
each one runs and how far the first one is. The attempt polls it, so progress, placement
and cancellation work as for a single-node job: when the attempt stops (cancelled, or an
error), it kills that actor, and the controller and its workers, which it owns, end
with it. Rank 0 saves the model (every rank its part, for an ensemble) as a Ray Train
checkpoint under the artifact root (shared by every node, as the model registry needs);
the attempt loads it, joins the parts, and removes the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers import algorithms
from trainers.algorithms import FittedModel
from trainers.algorithms.base import ENSEMBLE, LIGHTGBM_NETWORK, TORCH_DDP, XGBOOST_COLLECTIVE
from trainers.distributed import Shard, WorkerPlan, fit_worker
from trainers.errors import TrainingError
from trainers.ports import Level, Reporter
from trainers.spec import WorkerRequest

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
PROGRESS_EVERY = 0.25  # seconds between two progress messages of the first worker


class DistributedTrainingFailed(TrainingError):
    """A worker failed or was lost; another attempt may run on what is left of the cluster."""

    reason = "TrainingError"
    retryable = True


def _worker_loop(config: Mapping[str, Any]) -> None:
    """What each Ray Train worker runs."""
    import ray
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    run = config["run"]
    context = ray.get_runtime_context()
    run.placed.remote(rank, context.get_node_id(), ray.util.get_node_ip_address(), ray.util.get_current_placement_group())
    plan: WorkerPlan = ray.get(config["plan"])
    shard = _read_shard(rank, len(plan.feature_names), grouped=config["grouped"])  # this worker's rows only
    network: dict[str, Any] = {}
    if config["backend"] == LIGHTGBM_NETWORK:
        from ray.train.lightgbm import get_network_params

        network = get_network_params()
    last = 0.0

    def on_iteration(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY or done >= total:
            last = now
            run.progress.remote(done, total)

    model = fit_worker(plan, shard, rank=rank, network=network, on_iteration=on_iteration)
    keep = rank == 0 or config["backend"] == ENSEMBLE
    with tempfile.TemporaryDirectory() as folder:
        if keep:
            part = Path(folder) / f"worker-{rank}"
            part.mkdir()
            model.save(part)
        metrics = {"best_iteration": model.best_iteration or 0, "device": str(getattr(model, "device", "cpu"))}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if keep else None)


def _rows(shard: Shard) -> np.ndarray:
    """A shard as one array: inputs, target, and the series code when there are series."""
    columns = [shard.x, shard.y[:, None]] + ([shard.groups[:, None]] if shard.groups is not None else [])
    return np.hstack(columns).astype("float64")


def _read_shard(rank: int, width: int, *, grouped: bool) -> Shard:
    """This worker's dataset, read through Ray Train (in its rows' order: one block)."""
    import ray.train

    batches = [b["data"] for b in ray.train.get_dataset_shard(f"shard_{rank}").iter_batches(batch_format="numpy", batch_size=None)]
    rows = np.concatenate(batches) if batches else np.empty((0, width + 1 + grouped))
    return Shard(rows[:, :width], rows[:, width], rows[:, width + 1].astype(np.int64) if grouped else None)


def _trainer(backend: str, config: dict[str, Any], scaling: Any, run_config: Any, datasets: dict[str, Any]) -> Any:
    from ray.train import DataConfig

    # Every worker gets an iterator of each dataset, unsplit; worker r reads only shard_<r>.
    data: dict[str, Any] = {"datasets": datasets, "dataset_config": DataConfig(datasets_to_split=[])}
    if backend == LIGHTGBM_NETWORK:
        from ray.train.lightgbm import LightGBMTrainer

        return LightGBMTrainer(_worker_loop, train_loop_config=config, scaling_config=scaling, run_config=run_config, **data)
    if backend == XGBOOST_COLLECTIVE:
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(_worker_loop, train_loop_config=config, scaling_config=scaling, run_config=run_config, **data)
    if backend == TORCH_DDP:
        from ray.train.torch import TorchConfig, TorchTrainer

        torch_config = TorchConfig(backend="nccl" if scaling.use_gpu else "gloo")
        return TorchTrainer(
            _worker_loop, train_loop_config=config, torch_config=torch_config, scaling_config=scaling, run_config=run_config, **data
        )
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer(_worker_loop, train_loop_config=config, scaling_config=scaling, run_config=run_config, **data)


class _Run:
    """Runs one Ray Train fit (in one thread) and hears its workers (in the others)."""

    def __init__(self) -> None:
        self.where: dict[int, tuple[str, str]] = {}
        self.iteration = (0, 0)
        self.group: Any = None  # the workers' placement group

    def placed(self, rank: int, node_id: str, address: str, group: Any) -> None:
        self.where[rank] = (node_id, address)
        self.group = group

    def placement_group(self) -> Any:
        return self.group

    def progress(self, done: int, total: int) -> None:
        self.iteration = (done, total)

    def state(self) -> tuple[dict[int, tuple[str, str]], tuple[int, int]]:
        return dict(self.where), self.iteration

    def fit(
        self, backend: str, config: dict[str, Any], datasets: dict[str, Any], request: WorkerRequest, storage: str, name: str
    ) -> tuple[str, dict[str, Any]]:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig

        resources: dict[str, float] = {"CPU": request.cpus}
        if request.memory:
            resources["memory"] = float(request.memory)
        if request.gpus:
            resources["GPU"] = request.gpus
        scaling = ScalingConfig(
            num_workers=request.workers, use_gpu=bool(request.gpus), resources_per_worker=resources, placement_strategy="SPREAD"
        )
        run_config = RunConfig(name=name, storage_path=storage, failure_config=FailureConfig(max_failures=0))
        config = {**config, "run": ray.get_runtime_context().current_actor, "backend": backend}
        result = _trainer(backend, config, scaling, run_config, datasets).fit()
        if result.checkpoint is None:
            raise RuntimeError("the workers reported no model")
        return result.checkpoint.path, dict(result.metrics or {})


def _failure(exc: BaseException) -> TrainingError:
    """What the job's error says when Ray Train gave up: the first worker's own error, or
    that a worker (its process or its node) was lost."""
    import ray

    if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.NodeDiedError | ray.exceptions.GetTimeoutError):
        return DistributedTrainingFailed(f"the distributed run was lost (its process or node died): {type(exc).__name__}")
    failures = getattr(exc, "worker_failures", None) or {}
    for rank, error in sorted(failures.items()):
        cause = getattr(error, "cause", None) or error
        if isinstance(cause, TrainingError):
            return cause
        if isinstance(cause, ray.exceptions.RayActorError | ray.exceptions.ActorDiedError | ray.exceptions.NodeDiedError):
            return DistributedTrainingFailed(f"training worker {rank} was lost (its process or node died): {type(cause).__name__}")
        text = str(cause).strip().splitlines()
        return DistributedTrainingFailed(f"training worker {rank} failed: {type(cause).__name__}: {text[-1] if text else ''}"[:500])
    return DistributedTrainingFailed(f"distributed training failed: {type(exc).__name__}: {str(exc).strip()[:300]}")


@dataclass(frozen=True)
class RayDistributor:
    """trainers.ports.Distributor on the Ray cluster, for one attempt."""

    request: WorkerRequest
    storage: Path  # where workers leave their checkpoints: on storage every node shares
    name: str  # the run's name: unique per attempt

    def fit(self, plan: WorkerPlan, shards: Sequence[Shard], reporter: Reporter, on_iteration: Callable[[int, int], None]) -> FittedModel:
        import ray
        import ray.data
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        algorithm = algorithms.get(plan.algorithm)
        self.storage.mkdir(parents=True, exist_ok=True)
        config = {"plan": ray.put(plan), "grouped": shards[0].groups is not None}
        datasets = {f"shard_{rank}": ray.data.from_numpy(_rows(shard)) for rank, shard in enumerate(shards)}
        # On this node: the run lives and dies with the attempt that drives it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        run: Any = ray.remote(_Run).options(num_cpus=0, max_concurrency=4, scheduling_strategy=here).remote()
        pending = run.fit.remote(algorithm.data_parallel, config, datasets, self.request, str(self.storage), self.name)
        try:
            return self._follow(run, pending, algorithm, plan, reporter, on_iteration, len(shards))
        finally:
            shutil.rmtree(self.storage / self.name, ignore_errors=True)  # the workers' checkpoint, whatever happened

    def _follow(
        self,
        run: Any,
        pending: Any,
        algorithm: algorithms.Algorithm,
        plan: WorkerPlan,
        reporter: Reporter,
        on_iteration: Callable[[int, int], None],
        workers: int,
    ) -> FittedModel:
        """Relay the run's progress and placement until it ends; the model it made."""
        import ray

        placed = False
        try:
            while True:
                ready, _ = ray.wait([pending], timeout=POLL_SECONDS)
                where, (done, total) = ray.get(run.state.remote(), timeout=60)
                if total:
                    on_iteration(done, total)
                if not placed and len(where) == workers:
                    placed = True
                    reporter.log(Level.INFO, _placement(where))
                if ready:
                    break
            path, metrics = ray.get(pending)
        except ray.exceptions.RayTaskError as exc:
            raise _failure(getattr(exc, "cause", None) or exc) from None
        except ray.exceptions.RayError as exc:  # the run's actor itself was lost, or timed out
            raise _failure(exc) from None
        finally:
            _end(run)
        if self.request.gpus and metrics.get("device") != "cuda":
            reporter.log(Level.WARNING, "use_gpu was asked for but the workers saw no GPU: trained on the CPU")
        return _load(algorithm, Path(path), plan, metrics)


def _end(run: Any) -> None:
    """End the run: its actor (the Ray Train controller and workers it owns end with it), and
    the workers' placement group, which Ray Train's own cleaner may not remove (it asks the
    state API, which needs the dashboard)."""
    import ray

    group = None
    with contextlib.suppress(ray.exceptions.RayError):
        group = ray.get(run.placement_group.remote(), timeout=10)
    ray.kill(run)
    if group is not None:
        try:
            ray.util.remove_placement_group(group)
        except Exception:  # noqa: BLE001 - already removed by Ray Train
            log.debug("placement group already removed")


def _placement(where: Mapping[int, tuple[str, str]]) -> str:
    nodes: dict[str, list[int]] = {}
    for rank, (node_id, _) in sorted(where.items()):
        nodes.setdefault(node_id, []).append(rank)
    addresses = dict(where.values())
    described = "; ".join(
        f"node {node_id[:12]} ({addresses[node_id]}): workers {', '.join(map(str, ranks))}" for node_id, ranks in nodes.items()
    )
    return f"training: {len(where)} workers on {len(nodes)} node{'s' if len(nodes) != 1 else ''}: {described}"


def _load(algorithm: algorithms.Algorithm, folder: Path, plan: WorkerPlan, metrics: Mapping[str, Any]) -> FittedModel:
    task = plan.options.task
    parts = []
    for part in sorted(folder.glob("worker-*"), key=lambda p: int(p.name.split("-")[1])):
        files = [f for f in part.iterdir() if f.is_file()]
        parts.append(algorithm.load(files[0], task))
    if not parts:
        raise DistributedTrainingFailed("the workers' checkpoint holds no model")
    model = algorithm.combine(parts)
    best = int(metrics.get("best_iteration") or 0)
    if best and hasattr(model, "best_iteration"):
        model.best_iteration = best  # type: ignore[misc]
    return model
