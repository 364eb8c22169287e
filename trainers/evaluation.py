"""Evaluation: a trained model's metrics on the validation part (``evaluate``), a rolling-
origin backtest (``backtest``), and scoring a saved model on another window (``score``).
Reported metrics come only from rows nothing was tuned on."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from trainers import algorithms, features, intervals, metrics, predictions
from trainers.algorithms import TrainData
from trainers.algorithms.base import Task
from trainers.errors import ConfigValidationError, DataLoadError, Violation
from trainers.ports import STEP_START, Level, Reporter
from trainers.preparation import MIN_ROWS, TUNE_FRACTION, Prepared, derive, validation_rows
from trainers.spec import ModelType, TrainingSpec
from trainers.spec.model import DEFAULT_PERCENTILE
from trainers.spec.recipes import seasonal_lags

MIN_TUNE_POSITIVES = 5  # fewer labelled anomalies there: choose the threshold on all training rows
SEASONAL_HOURS = 168  # the longest seasonal-naive baseline (a week)
HISTORY_SLACK_HOURS = 24


def predict_after(model: algorithms.FittedModel, context: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predictions for the rows of ``x``; a model that needs earlier rows (lstm windows)
    gets them from the end of ``context``."""
    if model.context_rows:
        return model.predict(np.concatenate([context[len(context) - model.context_rows :], x]))
    return model.predict(x)


def evaluate(
    model: algorithms.FittedModel, prepared: Prepared, spec: TrainingSpec, reporter: Reporter
) -> tuple[dict[str, float], predictions.Predictions]:
    """The metrics on the validation part, and its predictions (kept for plots)."""
    d = prepared.data
    valid = prepared.frame.iloc[prepared.valid_rows]
    series = valid[features.SERIES] if features.SERIES in valid.columns else None
    stamps = valid["timestamp"]
    history = np.concatenate([d.x_train, d.x_tune]) if len(d.x_tune) else d.x_train
    pred = predict_after(model, history, d.x_valid)
    if prepared.task == algorithms.CLASSIFICATION:
        train_pred = model.predict(d.x_train)
        tune = (d.y_tune, predict_after(model, d.x_train, d.x_tune)) if len(d.y_tune) else None
        threshold, how, expected = choose_threshold(spec, train_pred, d.y_train[model.context_rows :], tune, default="labelled")
        scores = metrics.classification(d.y_valid, pred, threshold)
        scores.update(_flag_rate(scores["anomaly_rate"], expected, how, reporter))
        scores.update(metrics.events(d.y_valid, pred >= threshold, stamps.to_numpy(), None if series is None else series.to_numpy()))
        reporter.log(Level.INFO, f"evaluation: threshold {threshold:.4f}: {how}")
        kept = predictions.build(
            stamps, d.y_valid, kind=predictions.ANOMALY, scores=pred, threshold=threshold, labels=d.y_valid, series=series
        )
        return scores, kept
    if spec.model_type == ModelType.FORECAST:
        scores = forecast_scores(d.y_valid, pred, prepared.baselines, None if series is None else series.to_numpy(), reporter)
        quantiles, extra = _quantiles(model, prepared, spec, pred, scores, reporter)
        kept = predictions.build(
            stamps, d.y_valid, kind=predictions.FORECAST, predicted=pred, baselines=prepared.baselines, series=series,
            quantiles=quantiles, extra=extra,
        )  # fmt: skip
        return scores, kept
    # Unlabeled anomaly detection: a score per row, a threshold from the training range.
    residual = prepared.task != algorithms.RECONSTRUCTION
    if not residual:
        train_scores, valid_scores = model.predict(d.x_train), pred
    else:
        train_pred = model.predict(d.x_train)
        train_scores = np.abs(d.y_train[model.context_rows :] - train_pred)
        valid_scores = np.abs(d.y_valid - pred)
    train_labels = prepared.labels_train[model.context_rows :] if prepared.labels_train is not None else None
    threshold, how, expected = choose_threshold(spec, train_scores, train_labels, None, default="percentile")
    scores = metrics.anomaly_scores(valid_scores, threshold)
    if prepared.labels_valid is not None:
        scores.update(metrics.classification(prepared.labels_valid, valid_scores, threshold))
        scores.update(
            metrics.events(
                prepared.labels_valid, valid_scores >= threshold, stamps.to_numpy(), None if series is None else series.to_numpy()
            )
        )
        expected = expected if expected is not None else scores["label_rate"] or None
    scores.update(_flag_rate(scores["anomaly_rate"], expected, how, reporter))
    reporter.log(Level.INFO, f"evaluation: threshold {threshold:.4f}: {how}; {scores['anomaly_rate']:.2%} of validation rows flagged")
    kept = predictions.build(
        stamps,
        d.y_valid,
        kind=predictions.ANOMALY,
        predicted=pred if residual else None,
        scores=valid_scores,
        threshold=threshold,
        labels=prepared.labels_valid,
        series=series,
    )
    return scores, kept


def forecast_scores(
    y_valid: np.ndarray, pred: np.ndarray, baselines: Mapping[str, np.ndarray], series: np.ndarray | None, reporter: Reporter
) -> dict[str, float]:
    """A forecast's metrics on its validation rows: overall, against the seasonal-naive
    baselines, and their spread across series (``series``: each row's, when several)."""
    return forecast_report(metrics.forecast_sums(y_valid, pred, baselines, series), reporter)


def forecast_report(sums: pd.DataFrame, reporter: Reporter) -> dict[str, float]:
    """:func:`forecast_scores` from the validation errors summed per series
    (metrics.forecast_sums; a distributed job's workers each sum their own rows)."""
    scores = metrics.from_sums(sums)
    if "series_count" in scores:
        beating = scores.get("series_beating_baseline")
        reporter.log(
            Level.INFO,
            f"evaluation: {scores['series_count']:.0f} series: MAE median {scores['series_mae_median']:.4g}, "
            f"90th percentile {scores['series_mae_p90']:.4g}, worst {scores['series_mae_max']:.4g}"
            + ("" if beating is None else f"; {beating:.0%} beat their seasonal-naive baseline"),
        )
    if "skill" in scores and scores["skill"] <= 0:
        reporter.log(
            Level.WARNING,
            "the model does not beat the seasonal-naive baseline: "
            f"MAE {scores['mae']:.3f} vs {scores['baseline_mae']:.3f} (skill {scores['skill']:.3f})",
        )
    return scores


def _quantiles(
    model: algorithms.FittedModel, prepared: Prepared, spec: TrainingSpec, pred: np.ndarray, scores: dict[str, float], reporter: Reporter
) -> tuple[dict[float, np.ndarray] | None, dict[str, str]]:
    """The validation part's quantile forecasts (``quantiles``: split conformal on the tune
    part) with their metrics added to ``scores``, and the offsets for the model's folder."""
    d = prepared.data
    if not spec.quantiles:
        return None, {}
    if len(d.y_tune) < 24:
        reporter.log(Level.WARNING, "quantiles: the tune part (the last tenth of the training range) is too short to calibrate them")
        return None, {}
    tuned = predict_after(model, d.x_train, d.x_tune)
    shift = intervals.offsets(d.y_tune - tuned, spec.quantiles)
    quantiles = intervals.bands(pred, shift)
    baseline = _baseline_quantiles(prepared, spec.quantiles)
    scores.update(intervals.scores(d.y_valid, quantiles, baseline))
    said = ", ".join(f"q{intervals.label(q)} {off:+.3g}" for q, off in shift.items())
    reporter.log(Level.INFO, f"quantiles: offsets from {len(d.y_tune)} tune rows' residuals: {said}")
    return quantiles, {"intervals": json.dumps({intervals.key(q): off for q, off in shift.items()})}


def _baseline_quantiles(prepared: Prepared, levels: Sequence[float]) -> dict[float, np.ndarray] | None:
    """The seasonal-naive forecast's quantiles on the validation part (the baseline the
    predictions keep, the one behind baseline_mae): its own forecast plus the quantiles of its
    errors there, calibrated on those very rows (a reference that favours the baseline: the
    pinball skill against it is a conservative one). None without a complete baseline."""
    y = prepared.data.y_valid
    name, best = predictions.best_baseline(y, prepared.baselines)
    if not name or np.isnan(best).any():
        return None
    return intervals.bands(best, intervals.offsets(y - best, levels))


def choose_threshold(
    spec: TrainingSpec,
    train_scores: np.ndarray,
    train_labels: np.ndarray | None,
    tune: tuple[np.ndarray, np.ndarray] | None,
    *,
    default: str,
) -> tuple[float, str, float | None]:
    """The score threshold of an anomaly model, chosen on the training range by the config's
    ``threshold`` (else ``default``), how it was chosen in words, and the anomaly rate it
    expects (None when it has none). ``tune``: (labels, scores) of the tune part, for a
    classifier; otherwise ``labelled`` uses the last tenth of the training rows."""
    rule = spec.threshold
    method = rule.method if rule is not None else default
    value = rule.value if rule is not None else None
    scores = np.asarray(train_scores, dtype="float64")
    rate = float(np.mean(train_labels > 0.5)) if train_labels is not None and len(train_labels) else 0.0
    if method == "fixed" and value is not None:
        return float(value), f"fixed at {value:g}", None
    if method == "contamination" and value is not None:
        return float(np.quantile(scores, 1.0 - value)), f"contamination {value:g}: that share of training rows is above it", float(value)
    if method == "labelled":
        if tune is not None:
            labels, tuned = tune
        elif train_labels is not None:
            tail = max(1, int(len(scores) * TUNE_FRACTION))
            labels, tuned = np.asarray(train_labels)[-tail:], scores[-tail:]
        else:
            labels, tuned = np.zeros(0), np.zeros(0)
        if (np.asarray(labels) > 0.5).sum() >= MIN_TUNE_POSITIVES:
            found = metrics.best_f1_threshold(labels, tuned)
            return found, f"labelled: the best F1 on the labelled last {TUNE_FRACTION:.0%} of the training range", rate or None
        if rate > 0:  # never silently flag nothing: the training label rate as the expected rate
            why = f"labelled: fewer than {MIN_TUNE_POSITIVES} labelled anomalies in the tune window, "
            why += f"so contamination {rate:.4g} (the training label rate)"
            return float(np.quantile(scores, 1.0 - rate)), why, rate
        method, value = "percentile", None
        note = "labelled: no labelled anomaly in the training range, so "
    else:
        note = ""
    percentile = DEFAULT_PERCENTILE if value is None else float(value)
    return float(np.percentile(scores, percentile)), f"{note}the {percentile:g}th percentile of training scores", 1.0 - percentile / 100


def _flag_rate(flagged: float, expected: float | None, how: str, reporter: Reporter) -> dict[str, float]:
    """``flag_rate_ratio`` (validation rows flagged / the rate expected), and a WARNING when
    it is far from 1: the threshold did not transfer from the training range."""
    if not expected:
        return {}
    ratio = flagged / expected
    if not 0.5 <= ratio <= 2.0:
        reporter.log(
            Level.WARNING,
            f"evaluation: {flagged:.2%} of validation rows flagged, {ratio:.1f}x the {expected:.2%} expected ({how}); "
            "the threshold may not transfer: consider threshold.method contamination or labelled",
        )
    return {"flag_rate_ratio": float(ratio)}


def history_hours(spec: TrainingSpec) -> int:
    """Hours before a window that scoring reads too, so that the lags, the seasonal
    baselines and the context window (an algorithm's ``context_rows``) of its first rows
    have their past."""
    context = algorithms.get(spec.algorithm).context_rows(spec.hyperparameters)
    seasonal = max(SEASONAL_HOURS, *seasonal_lags(spec.forecast_horizon_hours))
    return max(spec.history_hours(), seasonal) + context + HISTORY_SLACK_HOURS


def horizon_scores(
    scores: Mapping[str, float], prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter
) -> dict[str, float]:
    """Per-horizon metrics (``horizons``): for each horizon h, a direct model trained on the
    same training rows with the features usable h hours ahead, scored on the same
    validation part against the seasonal-naive forecast at that horizon: ``mae_h<h>``,
    ``rmse_h<h>``, ``mape_h<h>``, ``baseline_mae_h<h>``, ``skill_h<h>``. The job's own
    horizon is the job's model."""
    out: dict[str, float] = {}
    for h in spec.horizons:
        if h == spec.forecast_horizon_hours:
            own = ("mae", "rmse", "mape", "baseline_mae", "skill")
            out.update({f"{name}_h{h}": scores[name] for name in own if name in scores})
        else:
            out.update(_direct_model_scores(h, prepared, spec, options, reporter))
    return out


def _direct_model_scores(
    h: int, prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter
) -> dict[str, float]:
    names = spec.usable_at(h)
    source = prepared.source
    derived = features.derive(source, spec, names, horizon=h)
    complete = derived[[*names, spec.target]].notna().all(axis=1).to_numpy()
    derived = derived[complete].reset_index(drop=True)
    valid, _ = validation_rows(derived, spec)
    if (~valid).sum() < MIN_ROWS or not valid.any():
        reporter.log(Level.WARNING, f"horizon {h} h: too few complete rows to score it")
        return {}
    x = derived[list(names)].to_numpy(dtype="float64")
    y = derived[spec.target].to_numpy(dtype="float64")
    quiet = dataclasses.replace(options, early_stopping_rounds=None, on_iteration=lambda i, n: None, on_metrics=None)
    model = algorithms.get(spec.algorithm).fit(
        TrainData(x[~valid], y[~valid], x[valid], y[valid], tuple(names)), spec.hyperparameters, quiet
    )
    m = metrics.regression(y[valid], predict_after(model, x[~valid], x[valid]))
    naive = {f"{k}h": features.lag(source, spec.target, k).to_numpy()[complete][valid] for k in dict.fromkeys(seasonal_lags(h))}
    base = metrics.baseline(y[valid], m["mae"], naive)
    dropped = [f for f in spec.features if f not in names]
    note = f" (without {', '.join(dropped)}: newer than the origin)" if dropped else ""
    reporter.log(Level.INFO, f"horizon {h} h: a direct model on {len(names)} features{note}, MAE {m['mae']:.4g}")
    out = {f"{name}_h{h}": float(m[name]) for name in ("mae", "rmse", "mape") if name in m}
    out.update({f"{name}_h{h}": base[name] for name in ("baseline_mae", "skill") if name in base})
    return out


def backtest(prepared: Prepared, spec: TrainingSpec, options: algorithms.FitOptions, reporter: Reporter) -> dict[str, float]:
    """Rolling origin: the last folds x horizon hours of the range are cut into consecutive
    windows; each fold trains on every row before its window (no early stopping) and is
    scored on it. Returns per-fold and mean MAE, RMSE and MAPE."""
    if spec.backtest is None:
        return {}
    folds, horizon = spec.backtest.folds, spec.backtest.horizon_hours
    frame, algorithm = prepared.frame, algorithms.get(spec.algorithm)
    x = frame[list(prepared.inputs)].to_numpy(dtype="float64")
    y = frame[spec.target].to_numpy(dtype="float64")
    end = frame["timestamp"].max()
    quiet = dataclasses.replace(options, early_stopping_rounds=None, on_iteration=lambda i, n: None, on_metrics=None)
    out: dict[str, float] = {}
    per_fold = []
    for k in range(folds):
        lo = end - pd.Timedelta(hours=horizon * (folds - k))
        hi = lo + pd.Timedelta(hours=horizon)
        train = (frame["timestamp"] <= lo).to_numpy()
        test = ((frame["timestamp"] > lo) & (frame["timestamp"] <= hi)).to_numpy()
        if train.sum() < MIN_ROWS or not test.any():
            raise DataLoadError(f"backtest fold {k + 1} has too few rows (train {int(train.sum())}, test {int(test.sum())})")
        model = algorithm.fit(TrainData(x[train], y[train], x[test], y[test], prepared.inputs), spec.hyperparameters, quiet)
        train_idx = np.flatnonzero(train)
        pred = predict_after(model, x[train_idx], x[test])
        m = metrics.regression(y[test], pred)
        per_fold.append(m)
        for name in ("mae", "rmse", "mape"):
            out[f"backtest_fold{k + 1}_{name}"] = m[name]
        reporter.progress(STEP_START["evaluation"] + int(10 * (k + 1) / folds) - 1)
    for name in ("mae", "rmse", "mape"):
        out[f"backtest_{name}"] = float(np.mean([m[name] for m in per_fold]))
    reporter.log(
        Level.INFO, f"backtest: {folds} folds of {horizon} h, mean MAE {out['backtest_mae']:.4g}, mean RMSE {out['backtest_rmse']:.4g}"
    )
    return out


def _threshold(trained: Mapping[str, float]) -> float:
    """The anomaly threshold chosen at training time (stored with the version's metrics)."""
    if "threshold" not in trained:
        raise DataLoadError("the model version has no anomaly threshold among its metrics; train it again to score it")
    return float(trained["threshold"])


@dataclasses.dataclass(frozen=True)
class Window:
    """A window's derived rows, the model's output and the target on them: what scoring and
    detection both read."""

    rows: pd.DataFrame
    pred: np.ndarray
    y: np.ndarray
    task: Task
    label_column: str | None
    baselines: Mapping[str, np.ndarray]


def window_rows(model: algorithms.FittedModel, frame: pd.DataFrame, spec: TrainingSpec) -> Window:
    """The rows of the window spec.training_start..training_end (``frame`` may start earlier:
    those rows are history only), derived as training derived its rows."""
    dv = derive(frame, spec)
    x = dv.frame[list(dv.inputs)].to_numpy(dtype="float64")
    keep = (dv.frame["timestamp"].iloc[model.context_rows :] >= pd.Timestamp(spec.training_start)).to_numpy()
    rows = dv.frame.iloc[model.context_rows :][keep]
    y = rows[spec.target].to_numpy(dtype="float64")
    if len(y) == 0:
        raise DataLoadError(f"no complete rows in the window for a model that needs {model.context_rows + 1} consecutive rows")
    baselines = {k: v[model.context_rows :][keep] for k, v in dv.baselines.items()}
    return Window(rows, model.predict(x)[keep], y, dv.task, dv.label_column, baselines)


def anomaly_scores_of(task: Task, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """An anomaly model's score per row, as training scored its validation rows: the
    classifier's or the detector's own output, else the residual |y - prediction|."""
    return pred if task in (algorithms.CLASSIFICATION, algorithms.RECONSTRUCTION) else np.abs(y - pred)


def score(model: algorithms.FittedModel, frame: pd.DataFrame, spec: TrainingSpec, trained: Mapping[str, float]) -> dict[str, float]:
    """Score a trained model on the window spec.training_start..training_end (``frame`` may
    start earlier: those rows are history only), with the metrics it was trained with;
    anomaly thresholds are the ones chosen at training time."""
    w = window_rows(model, frame, spec)
    if w.task == algorithms.CLASSIFICATION:
        out = metrics.classification(w.y, w.pred, _threshold(trained))
    elif spec.model_type == ModelType.FORECAST:
        out = metrics.regression(w.y, w.pred)
        out.update(metrics.baseline(w.y, out["mae"], w.baselines))
    else:
        scores = anomaly_scores_of(w.task, w.y, w.pred)
        threshold = _threshold(trained)
        out = metrics.anomaly_scores(scores, threshold)
        if w.label_column:
            out.update(metrics.classification(w.rows[w.label_column].to_numpy(dtype="float64"), scores, threshold))
    out["evaluation_rows"] = float(len(w.y))
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}


def detect(
    model: algorithms.FittedModel, frame: pd.DataFrame, spec: TrainingSpec, trained: Mapping[str, float]
) -> tuple[pd.DataFrame, float]:
    """An anomaly model's detections on the window spec.training_start..training_end:
    ``timestamp`` (and ``series_id``), ``score`` and ``flagged`` (score >= the threshold
    chosen at training time, the rule its validation rows were flagged by), and that
    threshold."""
    if spec.model_type != ModelType.ANOMALY:
        raise ConfigValidationError([Violation("model_type", "only an anomaly model detects; forecast with :forecast")])
    w = window_rows(model, frame, spec)
    threshold = _threshold(trained)
    scores = anomaly_scores_of(w.task, w.y, w.pred)
    out = pd.DataFrame({"timestamp": w.rows["timestamp"].to_numpy(), "score": scores, "flagged": scores >= threshold})
    if features.SERIES in w.rows.columns:
        out.insert(1, features.SERIES, w.rows[features.SERIES].astype(str).to_numpy())
    return out, threshold
