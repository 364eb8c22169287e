"""Predictions kept for looking: a completed job's validation-window predictions, written
as one Parquet file beside the model (``predictions.parquet``), read back for plots.

Columns: ``timestamp`` (UTC), ``series_id`` (only with several series), ``actual`` (the
target), and by kind:

- forecast: ``predicted`` (the model), ``baseline`` (the seasonal-naive forecast that
  scored best, the one behind ``baseline_mae``), ``q<level>`` (``q0.1``, ``q0.9``: the
  quantile forecasts, with ``quantiles``);
- anomaly: ``score``, ``flagged`` (score >= threshold, as the metrics count them), ``predicted`` (for a model scored by
  its residual), ``label`` (the labelled anomalies, when known).

The file's metadata says the kind, the threshold, the baseline's name, how many validation
rows there were and whether only the last MAX_ROWS were kept (the bound on its size).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainers import intervals
from trainers.features import SERIES

FILE_NAME = "predictions.parquet"
MAX_ROWS = 100_000  # at most this many (the newest) validation rows are kept: a few MB of Parquet
FORECAST, ANOMALY = "forecast", "anomaly"
_META_KEY = b"aihub.predictions"


@dataclass(frozen=True)
class Predictions:
    """A validation window's predictions and what describes them."""

    frame: pd.DataFrame
    kind: str
    threshold: float | None = None
    baseline: str = ""  # the seasonal-naive baseline's name, e.g. "24h"
    total_rows: int = 0  # validation rows before the bound (MAX_ROWS)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.total_rows > len(self.frame)


def build(
    stamps: pd.Series,
    actual: np.ndarray,
    *,
    kind: str,
    predicted: np.ndarray | None = None,
    baselines: Mapping[str, np.ndarray] | None = None,
    scores: np.ndarray | None = None,
    threshold: float | None = None,
    labels: np.ndarray | None = None,
    series: pd.Series | None = None,
    quantiles: Mapping[float, np.ndarray] | None = None,
    extra: Mapping[str, str] | None = None,
    baseline: str | None = None,
    total_rows: int | None = None,
) -> Predictions:
    """The Predictions of one validation window (arrays aligned with ``stamps``). A window
    whose rows are not all here (a distributed job's: the workers' last rows) says which
    ``baseline`` was chosen over all of them and how many there were (``total_rows``)."""
    n = len(stamps)
    columns: dict[str, object] = {"timestamp": pd.to_datetime(stamps, utc=True).array}  # not via Python objects: 0.25 s per 200k rows
    if series is not None:
        columns[SERIES] = series.astype(str).to_numpy()
    columns["actual"] = _floats(actual, n)
    if predicted is not None:
        columns["predicted"] = _floats(predicted, n)
    name = ""
    if baselines:
        name, values = best_baseline(actual, baselines) if baseline is None else (baseline, baselines.get(baseline, np.empty(0)))
        if name:
            columns["baseline"] = _floats(values, n)
    if scores is not None:
        score = _floats(scores, n)
        columns["score"] = score
        columns["flagged"] = score >= threshold if threshold is not None else np.zeros(n, dtype=bool)
    if labels is not None:
        columns["label"] = _floats(labels, n) > 0.5
    for level, values in (quantiles or {}).items():
        columns[intervals.column(level)] = _floats(values, n)  # q0.1, q0.9: the quantile forecasts
    frame = pd.DataFrame(columns)
    kept = frame.iloc[-MAX_ROWS:].reset_index(drop=True)
    return Predictions(kept, kind, threshold, name, n if total_rows is None else total_rows, dict(extra or {}))


def _floats(values: np.ndarray, n: int) -> np.ndarray:
    out = np.asarray(values, dtype="float64")
    if out.shape != (n,):
        raise ValueError(f"{out.shape} values for {n} rows")
    return out


def best_baseline(actual: np.ndarray, baselines: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """The baseline with the lowest MAE where it has values (as metrics.baseline chooses)."""
    best: tuple[float, str, np.ndarray] | None = None
    for name, values in baselines.items():
        ok = ~np.isnan(values)
        if ok.any():
            mae = float(np.mean(np.abs(values[ok] - actual[ok])))
            if best is None or mae < best[0]:
                best = (mae, name, values)
    return ("", np.empty(0)) if best is None else (best[1], best[2])


def write(predictions: Predictions, folder: Path) -> Path:
    """Write ``folder/predictions.parquet`` (zstd); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {
        "kind": predictions.kind,
        "threshold": predictions.threshold,
        "baseline": predictions.baseline,
        "total_rows": predictions.total_rows,
        **predictions.extra,
    }
    table = pa.Table.from_pandas(predictions.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    path = folder / FILE_NAME
    pq.write_table(table, path, compression="zstd")
    return path


def read(path: Path) -> Predictions:
    """Read a file ``write`` wrote. FileNotFoundError when there is none."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    frame = table.to_pandas()
    threshold = meta.get("threshold")
    return Predictions(
        frame,
        str(meta.get("kind", FORECAST)),
        float(threshold) if threshold is not None and math.isfinite(threshold) else None,
        str(meta.get("baseline", "")),
        int(meta.get("total_rows", len(frame))),
    )


def downsample(frame: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most about ``max_points`` rows for a plot: in each of max_points/2 equal buckets
    the rows with the lowest and the highest actual value (peaks and troughs survive), and
    every flagged row besides. The frame itself when it is small enough."""
    if max_points <= 0 or len(frame) <= max_points:
        return frame
    frame = frame.reset_index(drop=True)
    buckets = max(1, max_points // 2)
    bucket = (np.arange(len(frame)) * buckets) // len(frame)
    actual = frame["actual"].fillna(frame["actual"].mean() if frame["actual"].notna().any() else 0.0)
    grouped = actual.groupby(bucket)
    keep = set(grouped.idxmin().tolist()) | set(grouped.idxmax().tolist())
    if "flagged" in frame.columns:
        keep |= set(np.flatnonzero(frame["flagged"].to_numpy()).tolist())
    return frame.iloc[sorted(keep)]
