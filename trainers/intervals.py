"""Quantile forecasts by split conformal prediction: the model's residuals on the tune part
(the last tenth of the training range, rows it was not fitted on) give, for each level q, the
offset that q of them fall below; a forecast's quantile q is the forecast plus that offset.

Chosen for every algorithm alike, instead of LightGBM's and XGBoost's quantile objectives:
one model serves every level (a native quantile needs a model per level, three times the
training for P10/P50/P90), the levels never cross, and the intervals are calibrated on rows
the model has not seen (a quantile objective is fitted on the training rows, whose residuals
are smaller than tomorrow's, so its intervals cover too little). Each job's model has one
horizon, so the offsets are that horizon's. The offsets are kept beside the model
(``intervals.json``) for forecasts from the version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

FILE_NAME = "intervals.json"


def label(level: float) -> str:
    """A level as metric names write it: 0.1 -> "10", 0.975 -> "97.5"."""
    return f"{level * 100:g}"


def key(level: float) -> str:
    """A level as the API's quantiles maps write it: "0.1"."""
    return f"{level:g}"


def column(level: float) -> str:
    """The column a level's forecasts are kept in (predictions, forecast rows): "q0.1"."""
    return f"q{key(level)}"


def columns(names: Iterable[str]) -> dict[str, str]:
    """Of ``names``, the quantile columns, each with its API key: {"q0.1": "0.1", ...}."""
    out = {}
    for name in names:
        level = name[1:]
        if name.startswith("q") and level.replace(".", "", 1).isdigit():
            out[name] = level
    return out


def offsets(residuals: np.ndarray, levels: Sequence[float]) -> dict[float, float]:
    """For each level, the empirical quantile of the residuals (actual - forecast)."""
    r = np.asarray(residuals, dtype="float64")
    r = r[np.isfinite(r)]
    return {float(q): float(np.quantile(r, q)) for q in levels}


def bands(forecast: np.ndarray, shift: Mapping[float, float]) -> dict[float, np.ndarray]:
    return {q: np.asarray(forecast, dtype="float64") + off for q, off in sorted(shift.items())}


def pinball(actual: np.ndarray, quantile: np.ndarray, level: float) -> float:
    diff = np.asarray(actual, dtype="float64") - np.asarray(quantile, dtype="float64")
    return float(np.mean(np.maximum(level * diff, (level - 1) * diff)))


def scores(
    actual: np.ndarray, quantiles: Mapping[float, np.ndarray], baseline: Mapping[float, np.ndarray] | None = None
) -> dict[str, float]:
    """``pinball_loss_q<level>`` and their mean ``pinball_loss``; ``interval_coverage`` and
    ``interval_width`` of the outermost pair; ``pinball_skill`` (1 - ours / the baseline's
    quantiles' pinball loss) when ``baseline`` quantiles are given."""
    out = {f"pinball_loss_q{label(q)}": pinball(actual, v, q) for q, v in quantiles.items()}
    out["pinball_loss"] = float(np.mean(list(out.values())))
    levels = sorted(quantiles)
    if len(levels) >= 2:
        low, high = quantiles[levels[0]], quantiles[levels[-1]]
        y = np.asarray(actual, dtype="float64")
        out["interval_coverage"] = float(np.mean((y >= low) & (y <= high)))
        out["interval_width"] = float(np.mean(high - low))
    if baseline:
        theirs = float(np.mean([pinball(actual, baseline[q], q) for q in levels]))
        if theirs > 0:
            out["pinball_skill"] = 1.0 - out["pinball_loss"] / theirs
    return out


def write(folder: Path, shift: Mapping[float, float]) -> Path:
    path = folder / FILE_NAME
    path.write_text(json.dumps({key(q): off for q, off in sorted(shift.items())}))
    return path


def read(folder: Path) -> dict[float, float] | None:
    """A version's offsets, or None when it has no quantiles."""
    path = folder / FILE_NAME
    if not path.is_file():
        return None
    return {float(q): float(off) for q, off in json.loads(path.read_text()).items()}
