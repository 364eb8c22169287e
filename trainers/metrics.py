"""Metrics: regression (with seasonal-naive baselines), classification, anomaly scores."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# Shown in the evaluation log line, when present.
HEADLINE = (
    "mae",
    "rmse",
    "mape",
    "r2_score",
    "baseline_mae",
    "skill",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "anomaly_rate",
    "threshold",
)


def regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MAPE (percent, over rows whose true value is not 0) and R²."""
    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    err = y_pred - y_true
    mae = float(np.mean(np.abs(err)))
    rmse = float(np.sqrt(np.mean(err**2)))
    nonzero = y_true != 0
    mape = float(np.mean(np.abs(err[nonzero] / y_true[nonzero])) * 100) if nonzero.any() else float("nan")
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0
    return {"mae": mae, "rmse": rmse, "mape": mape, "r2_score": r2}


def baseline(y_true: np.ndarray, model_mae: float, naive: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Seasonal-naive forecasts (the value 24 h and 168 h earlier) on the same validation
    rows. baseline_mae/rmse are the better of the two; skill = 1 - mae / baseline_mae."""
    return _baselines(forecast_sums(y_true, y_true, naive, None).sum(), model_mae)


def _baselines(total: pd.Series, model_mae: float) -> dict[str, float]:
    """``baseline`` from the summed errors of each baseline (``b_<name>_n/abs/sq``)."""
    out: dict[str, float] = {}
    best = None
    for name in _baseline_names(total.index):
        ok = float(total[f"b_{name}_n"])
        if not ok:
            continue
        mae, rmse = float(total[f"b_{name}_abs"]) / ok, float(np.sqrt(total[f"b_{name}_sq"] / ok))
        out[f"baseline_{name}_mae"] = mae
        if best is None or mae < best[0]:
            best = (mae, rmse)
    if best is not None:
        out["baseline_mae"], out["baseline_rmse"] = best
        if best[0] > 0:
            out["skill"] = 1.0 - model_mae / best[0]
    return out


def _baseline_names(columns: pd.Index) -> list[str]:
    return [c.removeprefix("b_").removesuffix("_n") for c in columns if c.startswith("b_") and c.endswith("_n")]


def per_series(y_true: np.ndarray, y_pred: np.ndarray, series: np.ndarray, naive: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each series' MAE, MAPE and skill, summarised across series: ``series_count``, and the
    median, 90th percentile and worst of ``series_mae`` and ``series_mape`` (percent);
    ``series_skill_median`` and ``series_beating_baseline`` (the share of series whose MAE is
    below their own best seasonal-naive MAE). Empty with fewer than two series."""
    return _spread(forecast_sums(y_true, y_pred, naive, series))


def best_f1_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best F1 on (y_true, score)."""
    from sklearn.metrics import precision_recall_curve

    y_true = np.asarray(y_true) > 0.5
    if not y_true.any():
        return float(np.max(score)) if len(score) else 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, score)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def classification(y_true: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 at the threshold (score >= threshold is an anomaly), ROC-AUC
    and PR-AUC of the scores."""
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    y = np.asarray(y_true) > 0.5
    flagged = np.asarray(score) >= threshold
    out = {
        "precision": float(precision_score(y, flagged, zero_division=0)),
        "recall": float(recall_score(y, flagged, zero_division=0)),
        "f1": float(f1_score(y, flagged, zero_division=0)),
        "threshold": float(threshold),
        "anomaly_rate": float(flagged.mean()),
        "label_rate": float(y.mean()),
    }
    if 0 < y.sum() < len(y):
        out["roc_auc"] = float(roc_auc_score(y, score))
        out["pr_auc"] = float(average_precision_score(y, score))
    return out


def anomaly_scores(score: np.ndarray, threshold: float) -> dict[str, float]:
    score = np.asarray(score, dtype="float64")
    return {
        "threshold": float(threshold),
        "anomaly_rate": float(np.mean(score >= threshold)),  # as classification(): score >= threshold is an anomaly
        "score_mean": float(score.mean()),
        "score_std": float(score.std()),
        "score_p50": float(np.quantile(score, 0.5)),
        "score_p99": float(np.quantile(score, 0.99)),
    }


def events(labels: np.ndarray, flagged: np.ndarray, stamps: np.ndarray, series: np.ndarray | None = None) -> dict[str, float]:
    """How an operator judges a detector: labelled windows (runs of consecutive labelled rows
    in each series, rows in time order) caught by at least one flag inside, the hours from a
    window's start to its first flag (median over the caught ones), and flags outside every
    window per day of the span scored."""
    labels, flagged = np.asarray(labels) > 0.5, np.asarray(flagged, dtype=bool)
    times = pd.to_datetime(pd.Series(stamps), utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    groups = np.zeros(len(labels), dtype=int) if series is None else pd.factorize(np.asarray(series))[0]
    total = caught = 0
    delays: list[float] = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        lab, flag, t = labels[rows], flagged[rows], times[rows]
        starts = np.flatnonzero(lab & ~np.concatenate([[False], lab[:-1]]))
        ends = np.flatnonzero(lab & ~np.concatenate([lab[1:], [False]]))
        for a, b in zip(starts, ends, strict=True):
            total += 1
            hits = np.flatnonzero(flag[a : b + 1])
            if len(hits):
                caught += 1
                delays.append(float((t[a + hits[0]] - t[a]) / np.timedelta64(1, "h")))
    days = max(float((times.max() - times.min()) / np.timedelta64(1, "D")), 1.0) if len(times) else 1.0
    out = {"windows_total": float(total), "windows_caught": float(caught), "false_alarms_per_day": float((flagged & ~labels).sum() / days)}
    if delays:
        out["detection_delay_hours_median"] = float(np.median(delays))
    return out


def forecast_sums(y_true: np.ndarray, y_pred: np.ndarray, naive: Mapping[str, np.ndarray], series: np.ndarray | None) -> pd.DataFrame:
    """A forecast's validation errors summed per series (one row per series: '' for one),
    the sums that add up across shards: a distributed job's workers each sum their own rows
    and :func:`from_sums` gives the metrics of ``regression``, ``baseline`` and
    ``per_series`` over all of them without any process holding every row."""
    y_true = np.asarray(y_true, dtype="float64")
    err = np.asarray(y_pred, dtype="float64") - y_true
    nonzero = y_true != 0
    columns = {
        "n": np.ones(len(y_true)),
        "abs": np.abs(err),
        "sq": err**2,
        "nz": nonzero.astype("float64"),
        "ape": np.where(nonzero, np.abs(err) / np.where(nonzero, np.abs(y_true), 1.0), 0.0),
        "y": y_true,
        "y2": y_true**2,
    }
    for name, pred in naive.items():
        e = np.asarray(pred, dtype="float64") - y_true
        ok = ~np.isnan(e)
        columns[f"b_{name}_n"] = ok.astype("float64")
        columns[f"b_{name}_abs"] = np.where(ok, np.abs(e), 0.0)
        columns[f"b_{name}_sq"] = np.where(ok, e**2, 0.0)
    if series is None:  # one series: one sum per column
        return pd.DataFrame({k: [float(np.sum(v))] for k, v in columns.items()}, index=pd.Index([""], dtype="object"))
    codes, names = pd.factorize(np.asarray(series), sort=True)
    sums = pd.DataFrame(columns).groupby(codes, sort=True).sum()
    sums.index = pd.Index([str(names[c]) for c in sums.index], dtype="object")
    return sums


def combine_sums(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The sums of several shards' rows (a series split over shards adds up)."""
    return pd.concat(parts).groupby(level=0, sort=True).sum()


def from_sums(sums: pd.DataFrame) -> dict[str, float]:
    """``regression`` and ``baseline`` over every row summed in ``sums``, and ``per_series``
    when it holds two series or more."""
    total = sums.sum()
    n = float(total["n"])
    out = {"mae": float(total["abs"]) / n, "rmse": float(np.sqrt(total["sq"] / n))}
    out["mape"] = float(total["ape"] / total["nz"] * 100) if total["nz"] else float("nan")
    ss_tot = float(total["y2"] - total["y"] ** 2 / n)
    out["r2_score"] = 1.0 - float(total["sq"]) / ss_tot if ss_tot > 0 else 0.0
    out.update(_baselines(total, out["mae"]))
    out.update(_spread(sums))
    return out


def _spread(sums: pd.DataFrame) -> dict[str, float]:
    """``per_series`` from the errors summed per series."""
    if len(sums) < 2:
        return {}
    mae_s = sums["abs"] / sums["n"]
    mape_s = (sums["ape"] / sums["nz"].where(sums["nz"] > 0) * 100).dropna()
    out = {"series_count": float(len(sums))}
    for label, values in (("mae", mae_s), ("mape", mape_s)):
        if len(values):
            out[f"series_{label}_median"] = float(values.median())
            out[f"series_{label}_p90"] = float(values.quantile(0.9))
            out[f"series_{label}_max"] = float(values.max())
    if names := _baseline_names(sums.columns):
        naive_mae = pd.DataFrame({name: sums[f"b_{name}_abs"] / sums[f"b_{name}_n"].where(sums[f"b_{name}_n"] > 0) for name in names})
        best = naive_mae.min(axis=1)  # each series' better baseline (NaN where it has none)
        ok = best > 0
        if ok.any():
            skill = 1.0 - mae_s[ok] / best[ok]
            out["series_skill_median"] = float(skill.median())
            out["series_beating_baseline"] = float((skill > 0).mean())
    return out


def best_baseline_name(scores: Mapping[str, float]) -> str:
    """The name of the baseline ``baseline`` (or ``from_sums``) chose: the lowest MAE."""
    named = {
        k.removeprefix("baseline_").removesuffix("_mae"): v
        for k, v in scores.items()
        if k.startswith("baseline_") and k.endswith("_mae") and k != "baseline_mae"
    }
    return min(named, key=lambda k: named[k]) if named else ""
