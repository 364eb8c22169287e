"""Shards prepared where they are used: with ``"distributed": true`` each worker reads its
own rows of the window from the database, checks and prepares them, and trains and scores
on them; the attempt only coordinates, so no process holds the whole window.

How a window is cut (:func:`cut`): by series when there are at least as many series as
workers (whole series per worker, balanced by rows: lags, rolling windows and baselines
never leave a series, so each worker derives what one node would); else by time, into
equal spans on whole hours, each worker reading ``evaluation.history_hours`` more hours
before its span (the longest lag, rolling window or seasonal baseline, and slack) so the
features of its first rows are the ones a single node derives. The margin is read, never
owned: its rows are not checked, trained on or scored.

What stays exactly as on one node: the derived features of every row, the split into fit
| tune | validation (each series' own time range, cut at the same instant; the last tenth of
each series' training rows tunes), the data checks' counts and the metrics (computed from
every shard's validation predictions). What is each worker's own: ``use_sample`` draws from
its shard (the same share, not the same rows), and the bin sample of a histogram learner
is drawn from each shard in proportion to its rows.

The attempt holds, besides the model: the tune part (every worker stops on the same rows,
as before), the bin sample (bounded), and the validation part's actual and predicted values
and baselines (a few numbers a row, no features). A preprocessor runs on each shard with its
margin: one that looks further back than the longest lag, or at the whole window, sees less
than on one node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from trainers import algorithms, features, metrics, predictions, preparation, quality
from trainers.algorithms import FitOptions, FittedModel
from trainers.distributed import Shard, WorkerPlan, quiet
from trainers.evaluation import history_hours
from trainers.ports import DataSource
from trainers.preparation import TUNE_FRACTION
from trainers.spec import ModelType, TrainingSpec

HOUR = pd.Timedelta(hours=1)


def unsupported(spec: TrainingSpec) -> str:
    """Why this distributed job is prepared in the attempt, as before ('' when its workers
    prepare their own shards)."""
    if spec.model_type != ModelType.FORECAST:
        return "an anomaly model's thresholds are chosen on the whole training range"
    if algorithms.get(spec.algorithm).context_rows(spec.hyperparameters):
        return f"{spec.algorithm} trains on windows of consecutive rows"
    for field, what in (("quantiles", spec.quantiles), ("backtest", spec.backtest), ("horizons", spec.horizons), ("tuning", spec.tuning)):
        if what:
            return f"{field} needs the whole window"
    return ""


@dataclass(frozen=True)
class Span:
    """A stretch of time a worker owns, read with the look-back before it."""

    start: datetime  # read from here: the owned stretch's start less the look-back, not before the window
    end: datetime  # read to here (inclusive)
    owns_from: datetime | None = None  # rows at or after this time are owned (None: from ``start``)
    owns_to: datetime | None = None  # rows before this time are owned (None: through ``end``)

    def describe(self) -> str:
        owned = f"{self.owns_from or self.start:%Y-%m-%d %H:%M} .. {self.owns_to or self.end:%Y-%m-%d %H:%M}"
        return owned + (f" (read from {self.start:%Y-%m-%d %H:%M})" if self.owns_from and self.owns_from != self.start else "")


@dataclass(frozen=True)
class ShardRead:
    """What one worker reads and owns: these series (None: every series of the window) over
    these spans of time."""

    rank: int
    series: tuple[str, ...] | None
    spans: tuple[Span, ...]

    def describe(self) -> str:
        if self.series is not None:
            names = ", ".join(self.series[:3]) + (f", ... ({len(self.series)} series)" if len(self.series) > 3 else "")
            return f"worker {self.rank}: series {names}"
        return f"worker {self.rank}: " + " and ".join(span.describe() for span in self.spans)


def cut(outline: Sequence[tuple[str, int, datetime, datetime]], spec: TrainingSpec, workers: int) -> list[ShardRead]:
    """One ShardRead per worker from the window's outline ((series, rows, first, last) per
    series); ValueError when the window cannot give every worker rows. By time, each worker
    owns a stretch of the training range and one of the validation range (where the split
    will fall, about), so that fit rows, and validation rows, are shared out evenly."""
    if len(outline) >= workers:
        loads = [0] * workers
        owned: list[list[str]] = [[] for _ in range(workers)]
        for name, rows, _, _ in sorted(outline, key=lambda o: (-o[1], o[0])):  # largest first, to the lightest worker
            r = loads.index(min(loads))
            loads[r] += rows
            owned[r].append(name)
        whole = (Span(spec.training_start, spec.training_end),)
        return [ShardRead(r, tuple(sorted(names)), whole) for r, names in enumerate(owned)]
    first = pd.Timestamp(min(o[2] for o in outline)).floor("h")
    last = pd.Timestamp(max(o[3] for o in outline))
    hours = int((last - first) / HOUR) + 1
    split = int(hours * (1.0 - spec.validation_split))  # hours before the validation part, about
    if split < workers or hours - split < workers:
        raise ValueError(f"the window's {hours} hours cannot be shared out over {workers} workers")
    train = [first + HOUR * (split * r // workers) for r in range(workers + 1)]
    valid = [first + HOUR * (split + (hours - split) * r // workers) for r in range(workers + 1)]
    margin = pd.Timedelta(hours=history_hours(spec))
    window_start = pd.Timestamp(spec.training_start)

    def span(a: pd.Timestamp, b: pd.Timestamp, *, first_span: bool, last_span: bool) -> Span:
        start = max(window_start, a - margin)
        return Span(
            start.to_pydatetime(),
            (last if last_span else b).to_pydatetime(),
            None if first_span else a.to_pydatetime(),
            None if last_span else b.to_pydatetime(),
        )

    return [
        ShardRead(
            r,
            None,
            (
                span(train[r], train[r + 1], first_span=r == 0, last_span=False),
                span(valid[r], valid[r + 1], first_span=False, last_span=r + 1 == workers),
            ),
        )
        for r in range(workers)
    ]


@dataclass(frozen=True)
class Loaded:
    """What a worker tells the attempt after reading and deriving its shard."""

    checks: tuple[quality.Partial, ...]  # of each span's owned rows
    spans: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]]  # series -> its first and last complete row
    rows: int  # owned rows, sorted and deduplicated
    complete: int  # of which complete
    inputs: tuple[str, ...] = ()  # the model's input columns


@dataclass(frozen=True)
class Parts:
    """What a worker tells the attempt after splitting its shard."""

    fit: int
    tune_x: np.ndarray
    tune_y: np.ndarray
    valid: int
    moments: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # x / y -> (n, mean, M2), per column


@dataclass(frozen=True)
class Scored:
    """A worker's validation rows, predicted: their errors summed per series (all of them:
    metrics.forecast_sums), and the last ``predictions.MAX_ROWS`` rows themselves (in
    series then time order), of which the job keeps the last over all workers for plots."""

    sums: pd.DataFrame
    rows: int
    stamps: np.ndarray  # datetime64[ns], UTC
    series: np.ndarray  # str
    actual: np.ndarray
    predicted: np.ndarray
    baselines: Mapping[str, np.ndarray]


class ShardWorker:
    """A worker's shard, from reading to scoring; its methods are called in order by the
    attempt (trainers.pipeline's ``_run_sharded``), each on every worker before the next."""

    def __init__(self, data: DataSource, spec: TrainingSpec, read: ShardRead) -> None:
        self.data, self.spec, self.read = data, spec, read
        self.inputs: tuple[str, ...] = tuple(spec.features)

    def load(self) -> Loaded:
        spec, read = self.spec, self.read
        kwargs: dict[str, Any] = {} if read.series is None else {"series": list(read.series)}
        frames, checks = [], []
        for span in read.spans:
            part = self.data.load(spec.feature_table, spec.table_columns(), span.start, span.end, **kwargs)
            if span.owns_to is not None:
                part = part[part["timestamp"] < pd.Timestamp(span.owns_to)]
            own = _owned(part["timestamp"], (span,))
            checks.append(quality.summarize(part if own.all() else part[own].reset_index(drop=True), spec))
            frames.append(part)
        # Spans overlap only where one's look-back reads the other's rows: the same rows,
        # which deriving keeps once.
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        del frames
        one = str(frame[features.SERIES].iloc[0]) if features.SERIES in frame.columns and len(frame) else ""
        if not _owned(frame["timestamp"], read.spans).any():
            self._keep(pd.DataFrame(), {}, [one])
            return Loaded(tuple(checks), {}, 0, 0)
        dv = preparation.derive(frame, spec, min_rows=0)
        del frame
        keep = _owned(dv.frame["timestamp"], read.spans)
        source_rows = int(_owned(dv.source["timestamp"], read.spans).sum())
        if keep.all():
            self._keep(dv.frame, dv.baselines, [one])
        else:
            self._keep(dv.frame[keep].reset_index(drop=True), {k: v[keep] for k, v in dv.baselines.items()}, [one])
        self.inputs = dv.inputs
        del dv
        spans = {}
        if len(self.frame):
            by = self.frame["timestamp"].groupby(self.codes).agg(["min", "max"])
            spans = {self.names[c]: (a, b) for c, a, b in zip(by.index.to_numpy(dtype=int), by["min"], by["max"], strict=True)}
        return Loaded(tuple(checks), spans, source_rows, len(self.frame), self.inputs)

    def _keep(self, frame: pd.DataFrame, baselines: Mapping[str, np.ndarray], one: list[str]) -> None:
        """The shard's complete owned rows, and each row's series as a code into ``names``."""
        self.frame, self.baselines = frame, dict(baselines)
        if features.SERIES in frame.columns:
            column = frame[features.SERIES]
            self.codes = column.cat.codes.to_numpy()
            self.names = [str(c) for c in column.cat.categories]
        else:
            self.codes, self.names = np.zeros(len(frame), dtype="int8"), one

    def _stamps(self) -> np.ndarray:
        """The rows' times as naive UTC datetime64[ns]."""
        if not len(self.frame):
            return np.empty(0, "datetime64[ns]")
        return np.asarray(self.frame["timestamp"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"))

    def split(self, cuts: Mapping[str, pd.Timestamp]) -> list[dict[str, int]]:
        """Mark the validation rows (after their series' cut); per span, the training rows
        of each series."""
        self.span_of = _span_of(self.frame["timestamp"], self.read.spans) if len(self.frame) else np.zeros(0, int)
        if self.frame.empty:
            self.valid = np.zeros(0, bool)
            return [{} for _ in self.read.spans]
        never = pd.Timestamp.max.as_unit("ns").to_datetime64()  # a series with no complete row has no cut
        by_code = np.array([pd.Timestamp(cuts[n]).tz_convert(None).to_datetime64() if n in cuts else never for n in self.names])
        self.valid = self._stamps() > by_code.astype("datetime64[ns]")[self.codes]
        out = []
        for k in range(len(self.read.spans)):
            counts = np.bincount(self.codes[~self.valid & (self.span_of == k)], minlength=len(self.names))
            out.append({self.names[c]: int(n) for c, n in enumerate(counts) if n})
        return out

    def parts(self, offsets: Sequence[Mapping[str, int]], sizes: Mapping[str, int], tune: bool) -> Parts:
        """Cut the training rows into fit | tune (the last tenth of each series' training rows
        over all shards: ``offsets[k]`` are the rows of each series before span k, over all
        shards, ``sizes`` its rows in all), apply use_sample to the fit rows; what the
        attempt combines."""
        spec = self.spec
        width = len(self.inputs)
        x = self.frame[list(self.inputs)].to_numpy(dtype="float64") if len(self.frame) else np.empty((0, width))
        y = self.frame[spec.target].to_numpy(dtype="float64") if len(self.frame) else np.empty(0)
        train = np.flatnonzero(~self.valid)
        tune_idx = np.empty(0, dtype=int)
        if tune and len(train):
            codes, span = self.codes[train], self.span_of[train]
            before = np.array([[o.get(n, 0) for n in self.names] for o in offsets], dtype="int64")[span, codes]
            rank = pd.Series(codes).groupby([span, codes]).cumcount().to_numpy() + before
            size = np.array([sizes.get(n, 0) for n in self.names], dtype="int64")[codes]
            is_tune = rank >= np.floor(size * (1 - TUNE_FRACTION))
            train, tune_idx = train[~is_tune], train[is_tune]
        if spec.use_sample is not None and spec.use_sample < 1.0 and len(train):
            rng = np.random.default_rng([spec.random_seed, self.read.rank])
            keep = max(1, round(len(train) * spec.use_sample))
            train = np.sort(rng.choice(train, size=keep, replace=False))
        self.x_fit, self.y_fit = x[train], y[train]
        self.x_valid, self.y_valid = x[self.valid], y[self.valid]
        # What scoring needs of the derived frame, then the frame goes: training has only the arrays.
        self.valid_stamps = self._stamps()[self.valid]
        self.valid_series = np.asarray(self.names, dtype=object)[self.codes[self.valid]]
        self.baselines = {k: v[self.valid] for k, v in self.baselines.items()}
        self.frame = pd.DataFrame()
        moments = {"x": _moments(self.x_fit), "y": _moments(self.y_fit[:, None])}
        return Parts(len(train), x[tune_idx], y[tune_idx], len(self.y_valid), moments)

    def bin_sample(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` of the fit rows, drawn at random (all of them when there are fewer)."""
        n = len(self.y_fit)
        if rows >= n:
            return self.x_fit, self.y_fit
        rng = np.random.default_rng([self.spec.random_seed, self.read.rank, 1])
        pick = np.sort(rng.choice(n, size=rows, replace=False))
        return self.x_fit[pick], self.y_fit[pick]

    def shard(self) -> Shard:
        return Shard(self.x_fit, self.y_fit, None)

    def score(self, model: FittedModel) -> Scored:
        """The validation rows' predictions by the job's model (once it is trained)."""
        predicted = np.asarray(model.predict(self.x_valid) if len(self.y_valid) else np.empty(0), dtype="float64")
        naive, series = self.baselines, self.valid_series
        sums = metrics.forecast_sums(self.y_valid, predicted, naive, series)
        tail = slice(-predictions.MAX_ROWS, None)
        return Scored(
            sums, len(predicted), self.valid_stamps[tail], series[tail], self.y_valid[tail], predicted[tail],
            {k: v[tail] for k, v in naive.items()},
        )  # fmt: skip


def _owned(stamps: pd.Series, spans: Sequence[Span]) -> np.ndarray:
    """Which of these rows a shard owns (the look-back before a span is not its own)."""
    out = np.zeros(len(stamps), bool)
    for span in spans:
        inside = np.ones(len(stamps), bool)
        if span.owns_from is not None:
            inside &= (stamps >= pd.Timestamp(span.owns_from)).to_numpy()
        if span.owns_to is not None:
            inside &= (stamps < pd.Timestamp(span.owns_to)).to_numpy()
        out |= inside
    return out


def _span_of(stamps: pd.Series, spans: Sequence[Span]) -> np.ndarray:
    """Which span owns each of these (owned) rows."""
    out = np.zeros(len(stamps), int)
    for k, span in enumerate(spans[1:], start=1):
        if span.owns_from is not None:
            out[(stamps >= pd.Timestamp(span.owns_from)).to_numpy()] = k
    return out


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.full(values.shape[1], float(len(values)))
    if not len(values):
        return n, np.zeros(values.shape[1]), np.zeros(values.shape[1])
    mean = values.mean(axis=0)
    return n, mean, ((values - mean) ** 2).sum(axis=0)


def combine_moments(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean and (population) standard deviation of the rows of all ``parts``: Chan's
    pairwise combination of each part's count, mean and sum of squared deviations."""
    n, mean, m2 = parts[0]
    for nb, mb, m2b in parts[1:]:
        total = n + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - mean
            mean = np.where(total > 0, mean + delta * np.divide(nb, total, where=total > 0, out=np.zeros_like(total)), 0.0)
            m2 = m2 + m2b + delta**2 * np.divide(n * nb, total, where=total > 0, out=np.zeros_like(total))
        n = total
    std = np.sqrt(np.divide(m2, n, where=n > 0, out=np.zeros_like(m2)))
    return mean, std


def cuts(loaded: Sequence[Loaded], spec: TrainingSpec) -> tuple[dict[str, pd.Timestamp], pd.Timestamp]:
    """Each series' validation cut, as preparation.validation_rows takes it on one node (its
    first and last complete row over all shards), and the split time (the latest cut)."""
    spans: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    for part in loaded:
        for name, (a, b) in part.spans.items():
            was = spans.get(name)
            spans[name] = (a, b) if was is None else (min(was[0], a), max(was[1], b))
    at = {name: a + (b - a) * (1.0 - spec.validation_split) for name, (a, b) in spans.items()}
    return at, max(at.values())


def tune_offsets(
    reads: Sequence[ShardRead], counts: Sequence[Sequence[Mapping[str, int]]]
) -> tuple[list[list[dict[str, int]]], dict[str, int]]:
    """Per shard and span, the training rows of each series in all spans before it in time
    (spans do not overlap in what they own), and each series' training rows in all."""
    order = sorted(((span.owns_from or span.start, r, k) for r, read in enumerate(reads) for k, span in enumerate(read.spans)))
    offsets: list[list[dict[str, int]]] = [[{} for _ in read.spans] for read in reads]
    sizes: dict[str, int] = {}
    for _, r, k in order:
        offsets[r][k] = {name: sizes.get(name, 0) for name in counts[r][k]}
        for name, n in counts[r][k].items():
            sizes[name] = sizes.get(name, 0) + n
    return offsets, sizes


def plan(
    spec: TrainingSpec,
    options: FitOptions,
    inputs: tuple[str, ...],
    parts: Sequence[Parts],
    samples: Sequence[tuple[np.ndarray, np.ndarray]] | None,
) -> WorkerPlan:
    """What every worker gets besides its own fit rows (as trainers.distributed.plan says
    for shards cut in the attempt): the whole tune part, the fit part's statistics and the
    bin sample."""
    x_mean, x_std = combine_moments([p.moments["x"] for p in parts])
    y_mean, y_std = combine_moments([p.moments["y"] for p in parts])
    stats = {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}
    width = len(inputs)
    x_tune = np.concatenate([p.tune_x.reshape(-1, width) for p in parts])
    y_tune = np.concatenate([p.tune_y for p in parts])
    bins = None
    if samples is not None:
        bins = (np.concatenate([s[0].reshape(-1, width) for s in samples]), np.concatenate([s[1] for s in samples]))
    fits = tuple(p.fit for p in parts)
    return WorkerPlan(spec.algorithm, dict(spec.hyperparameters), quiet(options), x_tune, y_tune, inputs, stats, fits, bins)


def bin_shares(parts: Sequence[Parts], wanted: int) -> list[int]:
    """How many rows of the bin sample each shard draws: in proportion to its fit rows, at
    most ``wanted`` in all."""
    total = sum(p.fit for p in parts)
    if total <= wanted:
        return [p.fit for p in parts]
    return [math.floor(wanted * p.fit / total) for p in parts]


def joined(scored: Sequence[Scored]) -> Scored:
    """Every worker's sums added up, and the last ``predictions.MAX_ROWS`` of their last
    rows in series then time order (the rows one node would keep)."""
    sums = metrics.combine_sums([s.sums for s in scored if s.rows])
    kept = [s for s in scored if len(s.actual)] or list(scored[:1])
    stamps = np.concatenate([s.stamps for s in kept])
    series = np.concatenate([s.series.astype(object) for s in kept])
    order = np.lexsort((stamps, series.astype(str)))[-predictions.MAX_ROWS :]
    names = kept[0].baselines.keys()
    return Scored(
        sums,
        sum(s.rows for s in scored),
        stamps[order],
        series[order],
        np.concatenate([s.actual for s in kept])[order],
        np.concatenate([s.predicted for s in kept])[order],
        {k: np.concatenate([s.baselines[k] for s in kept])[order] for k in names},
    )
