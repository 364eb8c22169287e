"""MLflow tracking of one attempt (a job whose config has ``mlflow_tracking``), from the Ray
task that runs it. Needs the optional extra (``pip install 'aihub-training[mlflow]'``); the
config check refuses tracking where MLflow is not installed.

The run (in the config's experiment, created when missing) gets:

- tags: the config's, plus ``aihub.tenant_id``, ``aihub.job_id``, ``aihub.attempt``,
  ``aihub.algorithm``, ``aihub.config_hash`` and, once registered, ``aihub.model_version``,
  ``aihub.model_id`` and ``aihub.model_uri``;
- params: algorithm, target, features, window, feature table, validation split, seed, horizon,
  and each hyperparameter (``hp.<name>``);
- metrics: every round's (or epoch's) training metrics (``live_tune_mae`` ... with step = the
  round), sent in batches at most once a second; at the end the job's final metrics;
- the model, in MLflow's own flavor where the algorithm declares one (Algorithm.mlflow_flavor:
  LightGBM, XGBoost, scikit-learn), else the artifact folder as run artifacts;
- status FINISHED, FAILED or KILLED (cancelled) with the attempt.

Tracking never fails a job: an MLflow that cannot be reached is a WARNING in the job's log,
and the attempt goes on untracked.
"""

from __future__ import annotations

import functools
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainers import algorithms
from trainers.spec import ModelType, TrainingSpec

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0
MAX_PARAM = 6000  # MLflow's limit on a param value


class MlflowRun:
    def __init__(
        self,
        uri: str,
        spec: TrainingSpec,
        *,
        tenant_id: str,
        job_id: str,
        attempt: int,
        warn: Callable[[str], None],
        artifact_root: str | None = None,
    ) -> None:
        self.uri, self.spec = uri, spec
        self.tenant_id, self.job_id, self.attempt = tenant_id, job_id, attempt
        self.warn = warn  # a WARNING in the job's log
        self.artifact_root = artifact_root  # for experiments this run creates (the default local store)
        self.run_id: str | None = None
        self._buffer: list[Any] = []
        self._flushed = time.monotonic()
        self.client: Any = None
        self._sender: threading.Thread | None = None  # sends metric batches while training goes on
        self._batches: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        if self.client is None:
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - tracking never fails the job
            self.warn(f"MLflow tracking stopped ({what} failed: {type(exc).__name__}: {str(exc)[:300]}); the job goes on untracked")
            self.client = None
            return None

    def start(self) -> str | None:
        from mlflow.tracking import MlflowClient

        tracking = self.spec.mlflow_tracking
        if tracking is None:
            return None
        self.client = MlflowClient(self.uri)

        def go() -> str:
            found = self.client.get_experiment_by_name(tracking.experiment_name)
            if found is not None:
                experiment = found.experiment_id
            else:
                experiment = self.client.create_experiment(tracking.experiment_name, artifact_location=self.artifact_root)
            tags = {
                **dict(tracking.tags),
                "aihub.tenant_id": self.tenant_id,
                "aihub.job_id": self.job_id,
                "aihub.attempt": str(self.attempt),
                "aihub.algorithm": self.spec.algorithm,
                "aihub.config_hash": self.spec.config_hash,
            }
            run = self.client.create_run(experiment, run_name=tracking.run_name or f"{self.job_id[:8]}-attempt-{self.attempt}", tags=tags)
            self._log_params(run.info.run_id)
            return str(run.info.run_id)

        self.run_id = self._guard("starting the run", go)
        return self.run_id

    def _log_params(self, run_id: str) -> None:
        from mlflow.entities import Param

        s = self.spec
        params = {
            "algorithm": s.algorithm,
            "target": s.target,
            "features": ",".join(s.features),
            "training_start": s.training_start.isoformat(),
            "training_end": s.training_end.isoformat(),
            "feature_table": s.feature_table,
            "validation_split": s.validation_split,
            "random_seed": s.random_seed,
            "forecast_horizon_hours": s.forecast_horizon_hours,
            **{f"hp.{k}": v for k, v in s.hyperparameters.items()},
        }
        self.client.log_batch(run_id, params=[Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()])

    # --- trainers.ports.Tracker ---------------------------------------------------------
    def round(self, step: int, values: Mapping[str, float]) -> None:
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, int(step)) for k, v in values.items()]
        if time.monotonic() - self._flushed >= FLUSH_SECONDS or len(self._buffer) >= 900:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the sender thread (training does not wait for MLflow)."""
        batch, self._buffer = self._buffer, []
        self._flushed = time.monotonic()
        if not batch:
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send, name="mlflow-metrics", daemon=True)
            self._sender.start()
        self._batches.put(batch)

    def _send(self) -> None:
        while (batch := self._batches.get()) is not None:
            for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics a batch
                part = batch[i : i + 1000]
                self._guard("logging metrics", functools.partial(self._log_metrics, part))

    def _log_metrics(self, metrics: list[Any]) -> None:
        self.client.log_batch(self.run_id, metrics=metrics)

    def _drain(self) -> None:
        """Wait until every metric handed to the sender is sent."""
        self.flush()
        if self._sender is not None:
            self._batches.put(None)
            self._sender.join()
            self._sender = None

    # --- the end ------------------------------------------------------------------------
    def finish(self, metrics: Mapping[str, float], artifact: Path, version: int, model_id: str) -> None:
        from mlflow.entities import Metric, RunTag

        if self.client is None or self.run_id is None:
            return
        self._drain()
        now = int(time.time() * 1000)
        final = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self._guard("logging the final metrics", lambda: self.client.log_batch(self.run_id, metrics=final))
        model_uri = self._guard("logging the model", lambda: self._log_model(artifact))
        tags = {"aihub.model_version": str(version), "aihub.model_id": model_id, "aihub.model_uri": str(model_uri or "")}
        if self.spec.model_type == ModelType.FORECAST:
            tags["aihub.pyfunc_uri"] = str(self._guard("logging the pyfunc model", lambda: self._log_pyfunc(artifact)) or "")
        self._guard("tagging the run", lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
        self.end("FINISHED")

    def end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self._drain()
            self._guard("ending the run", lambda: self.client.set_terminated(self.run_id, status))

    def _log_model(self, artifact: Path) -> str:
        """The model in MLflow's flavor for its library (its URI), else the files."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        algorithm = algorithms.get(self.spec.algorithm)
        flavor, package = algorithm.mlflow_flavor
        with mlflow.start_run(run_id=self.run_id):
            if not flavor:
                mlflow.log_artifacts(str(artifact.parent), artifact_path="model")
                return f"runs:/{self.run_id}/model"
            module = importlib.import_module(f"mlflow.{flavor}")
            info = module.log_model(algorithm.native_model(artifact), name="model", pip_requirements=_requirements(package))
        return str(info.model_uri)

    def _log_pyfunc(self, artifact: Path) -> str:
        """The forecaster as a pyfunc model that carries its feature derivation (trainers/pyfunc.py):
        this package's trainers folder as code, the config and the version's folder as
        artifacts, a signature and an input example."""
        import tempfile

        import mlflow

        import trainers
        from trainers import intervals, pyfunc

        mlflow.set_tracking_uri(self.uri)
        model = algorithms.get(self.spec.algorithm).load(artifact, algorithms.REGRESSION)
        package = algorithms.get(self.spec.algorithm).mlflow_flavor[1]
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=self.run_id):
            config = pyfunc.write_config(self.spec, artifact, Path(tmp) / "config.json")
            info = mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=pyfunc.ForecastModel(),
                artifacts={pyfunc.CONFIG: str(config), pyfunc.MODEL_DIR: str(artifact.parent)},
                code_paths=[str(Path(trainers.__file__).parent)],
                signature=pyfunc.signature(model, self.spec, intervals.read(artifact.parent)),
                input_example=pyfunc.input_example(self.spec),
                pip_requirements=_requirements("pandas", "numpy", "scikit-learn", "pydantic", "holidays", package or "torch"),
            )
        return str(info.model_uri)


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of a logged model, from what is installed (no inference: MLflow's
    would start a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in packages:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def default_uri(data_dir: Path) -> tuple[str, str]:
    """The local store under ``data_dir``: (tracking URI, artifact root)."""
    root = (data_dir / "mlruns").resolve()
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
