"""Shards prepared where they are used (trainers/shards.py): workers that each read only their
own rows derive the same features, split the same rows into fit | tune | validation, count
the same data checks and score the same validation rows as one node does with the whole
window. Here the workers are ShardWorkers in this process over a FrameSource; through Ray
and PostgreSQL: tests/integration/test_distributed.py and tests/cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import QUICK_START_CONFIG
from trainers import algorithms, metrics, pipeline, predictions, preparation, quality, shards, spec
from trainers.algorithms import TrainData
from trainers.local import FolderRegistry, FrameSource, MemoryReporter


def _frame(series: Sequence[str], hours: int = 24 * 70, gaps: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    ts = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    parts = []
    for i, name in enumerate(series):
        t = np.arange(hours)
        load = 100 + 10 * i + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 2, hours)
        part = pd.DataFrame({"timestamp": ts, "series_id": name, "load": load, "temperature": rng.normal(10, 3, hours), "humidity": 50.0})
        parts.append(part.drop(index=rng.choice(hours, gaps, replace=False)))
    return pd.concat(parts, ignore_index=True)


def _config(**overrides: Any) -> dict[str, Any]:
    cfg = {
        **QUICK_START_CONFIG,
        "features": ["temperature", "hour_of_day", "load_lag_1", "load_lag_24", "load_roll24_mean"],
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-03-10T23:00:00",
        "hyperparameters": {"n_estimators": 30, "num_leaves": 7},
        "early_stopping_rounds": 5,
        "distributed": True,
        "ray_config": {"num_workers": 2, "cpus_per_worker": 1},
    }
    return {**cfg, **overrides}


def _spec(**overrides: Any) -> spec.TrainingSpec:
    return spec.build(_config(**overrides))


class LocalGang:
    """trainers.ports.Gang in this process: each 'worker' a ShardWorker; ``fit`` trains one
    model on every worker's fit rows together (what the workers' collective computes)."""

    def __init__(self, data: FrameSource, job: spec.TrainingSpec, reads: Sequence[shards.ShardRead]) -> None:
        self.workers = [shards.ShardWorker(data, job, read) for read in reads]
        self.plans: list[Any] = []

    def each(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        return [getattr(w, method)(*a) for w, a in zip(self.workers, args, strict=True)]

    def fit(self, plan: Any, reporter: Any, on_iteration: Any) -> algorithms.FittedModel:
        self.plans.append(plan)
        x = np.concatenate([w.x_fit for w in self.workers])
        y = np.concatenate([w.y_fit for w in self.workers])
        data = TrainData(x, y, np.empty((0, x.shape[1])), np.empty(0), plan.feature_names, plan.x_tune, plan.y_tune)
        return algorithms.get(plan.algorithm).fit(data, plan.hyperparameters, plan.options)


class LocalDistributor:
    prepares_shards = True

    def __init__(self, data: FrameSource) -> None:
        self.data = data
        self.reads: list[shards.ShardRead] = []

    def fit(self, *args: Any) -> Any:
        raise AssertionError("a job whose workers prepare their shards never ships shards")

    @contextlib.contextmanager
    def gang(self, job: spec.TrainingSpec, reads: Sequence[shards.ShardRead], reporter: Any) -> Iterator[LocalGang]:
        self.reads = list(reads)
        yield LocalGang(self.data, job, reads)


def _rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    both = np.column_stack([x, y])
    return both[np.lexsort(both.T[::-1])]


@pytest.mark.parametrize(
    ("series", "workers", "how"),
    [(["a"], 2, "time"), (["a"], 3, "time"), (["a", "b", "c"], 2, "series"), (["a", "b"], 3, "time")],
)
def test_the_workers_prepare_exactly_the_rows_one_node_prepares(series, workers, how, monkeypatch):
    frame = _frame(series)
    job = _spec(ray_config={"num_workers": workers, "cpus_per_worker": 1})
    data = FrameSource(frame)
    reads = shards.cut(data.outline(job.feature_table, job.training_start, job.training_end), job, workers)
    assert (reads[0].series is not None) == (how == "series")
    gang = LocalGang(data, job, reads)
    loaded = gang.each("load", [()] * workers)
    window = data.load(job.feature_table, job.table_columns(), job.training_start, job.training_end)
    one = preparation.prepare(window, job, MemoryReporter())
    # The data checks count what one node counts (gaps included: shards cut on whole hours).
    whole, _ = quality.combine([quality.summarize(window, job)], job)
    split_up, _ = quality.combine([c for part in loaded for c in part.checks], job)
    assert split_up == whole and whole["data_gaps"] > 0
    cut_at, split_at = shards.cuts(loaded, job)
    assert split_at == one.split_at
    counts = gang.each("split", [(cut_at,)] * workers)
    offsets, sizes = shards.tune_offsets(reads, counts)
    parts = gang.each("parts", [(offsets[r], sizes, True) for r in range(workers)])
    assert all(p.fit for p in parts), [p.fit for p in parts]
    d = one.data
    fit = _rows(np.concatenate([w.x_fit for w in gang.workers]), np.concatenate([w.y_fit for w in gang.workers]))
    # Equal up to the last bits of a rolling sum, which pandas accumulates from where a frame starts.
    np.testing.assert_allclose(fit, _rows(d.x_train, d.y_train), rtol=1e-12)
    tune = _rows(np.concatenate([p.tune_x for p in parts]), np.concatenate([p.tune_y for p in parts]))
    np.testing.assert_allclose(tune, _rows(d.x_tune, d.y_tune), rtol=1e-12)
    # The statistics combined from each shard's moments are the whole fit part's.
    x_mean, x_std = shards.combine_moments([p.moments["x"] for p in parts])
    np.testing.assert_allclose(x_mean, d.x_train.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(x_std, d.x_train.std(axis=0), rtol=1e-8)

    class Echo:  # a "model" predicting the first input: the rows' order and values show
        def predict(self, x: np.ndarray) -> np.ndarray:
            return x[:, 0]

    monkeypatch.setattr(predictions, "MAX_ROWS", 100)  # each worker sends its last 100 rows; the job keeps the last 100 of all
    scored = shards.joined(gang.each("score", [(Echo(),)] * workers))
    assert scored.rows == len(d.y_valid)
    np.testing.assert_array_equal(scored.actual, d.y_valid[-100:])
    np.testing.assert_allclose(scored.predicted, d.x_valid[-100:, 0], rtol=1e-12)
    for name, values in one.baselines.items():
        np.testing.assert_array_equal(scored.baselines[name], values[-100:])
    # The metrics from the workers' sums are those of every validation row on one node.
    valid = one.frame.iloc[one.valid_rows]
    names = valid["series_id"].astype(str).to_numpy() if "series_id" in valid.columns else None
    whole = metrics.from_sums(metrics.forecast_sums(d.y_valid, d.x_valid[:, 0], one.baselines, names))
    assert metrics.from_sums(scored.sums) == pytest.approx(whole, rel=1e-9)
    assert ("series_count" in whole) == (len(series) > 1)


def test_a_job_run_on_prepared_shards_scores_as_one_node_does(tmp_path):
    frame = _frame(["a"])
    job = _spec()
    one_node = {k: v for k, v in _config().items() if k not in ("distributed", "ray_config")}
    single = pipeline.run(spec.build(one_node), data=FrameSource(frame), reporter=MemoryReporter(),
                          registry=FolderRegistry(tmp_path / "one"))  # fmt: skip
    distributor = LocalDistributor(FrameSource(frame))
    reporter = MemoryReporter()
    done = pipeline.run(job, data=FrameSource(frame), reporter=reporter, registry=FolderRegistry(tmp_path / "two"), distributor=distributor)
    lines = [m for _, m in reporter.lines]
    assert any("each of 2 workers reads its own shard, by time" in m for m in lines), lines
    assert any(m.startswith("training: data-parallel over 2 workers") for m in lines), lines
    # Each worker owns a stretch of the training range and one of the validation range.
    assert len(distributor.reads) == 2 and all(len(r.spans) == 2 for r in distributor.reads)
    for key in ("validation_rows", "train_rows", "data_rows", "data_gaps", "baseline_mae", "training_data_size"):
        assert done.metrics[key] == pytest.approx(single.metrics[key]), key
    # One model on the same rows (in another order): its metrics within LightGBM's order noise.
    assert abs(done.metrics["mae"] - single.metrics["mae"]) <= 0.02 * single.metrics["mae"]
    kept, one_kept = (predictions.read(r.artifact.parent / predictions.FILE_NAME) for r in (done, single))
    assert (kept.total_rows, kept.baseline, len(kept.frame)) == (one_kept.total_rows, one_kept.baseline, len(one_kept.frame))
    pd.testing.assert_series_equal(kept.frame["timestamp"], one_kept.frame["timestamp"], check_dtype=False)
    pd.testing.assert_series_equal(kept.frame["actual"], one_kept.frame["actual"])


def test_a_window_too_short_for_its_workers_names_num_workers():
    frame = _frame(["a"], hours=30, gaps=0)
    job = _spec(ray_config={"num_workers": 16, "cpus_per_worker": 1}, training_end="2024-01-02T05:00:00")
    outline = FrameSource(frame).outline(job.feature_table, job.training_start, job.training_end)
    with pytest.raises(ValueError, match="cannot be shared out over 16 workers"):
        shards.cut(outline, job, 16)


def test_jobs_whose_steps_need_the_whole_window_say_why():
    assert shards.unsupported(_spec()) == ""
    assert "anomaly" in shards.unsupported(_spec(model_type="anomaly", algorithm="lgbm"))
    assert "windows" in shards.unsupported(_spec(algorithm="lstm", hyperparameters={}, early_stopping_rounds=None))
    assert "quantiles" in shards.unsupported(_spec(quantiles=[0.1, 0.9]))
