"""The peers' side of bench/peers, run by the peers' own interpreter (.venv-peers: mlforecast
and statsforecast need pandas < 3, the service pandas 3), so it imports nothing of ours.

    .venv-peers/bin/python bench/_peers_side.py FRAME.csv SPEC.json

FRAME.csv: timestamp (UTC), load and the known-ahead columns. SPEC.json: {"horizon": h,
"split_at": ISO time, "exogenous": [...], "mstl": true|false, "timezone": IANA or null: the
clock our job's calendar features read, given to mlforecast's date features too}. Prints one JSON object:
{"mlforecast": {"mae", "mape", "rows", "seconds"}, "mstl": {...}}.

- mlforecast: LightGBM at its defaults (LGBMRegressor()), the lags our plain job uses (1, 24
  and 168 h at 1 h ahead; 24 and 168 at 24 h), hour and day of week, the known-ahead columns.
  Fitted on the rows up to split_at; the validation rows' features come from mlforecast's own
  preprocess over the whole frame, so each is forecast from actuals ``horizon`` hours old or
  older: the same task as our job's (no value nearer than the horizon is used).
- MSTL (statsforecast, seasons 24 and 168 h, AutoETS trend): fitted once on the rows up to
  split_at, then cross_validation with refit=False: at 1 h ahead a forecast from every hour,
  at 24 h a day-ahead forecast from each midnight (hours 1..24 ahead, which favours it). Each
  window decomposes the series again (about 3 s on the demo feeder's 17,000 hours), so 1 h
  ahead is left out (null) beyond MSTL_HOURLY_MAX validation hours (on the demo feeder's 4,344
  it ran for over 20 minutes without ending), and 24 h ahead takes at most MSTL_DAYS_MAX
  days, the first of the validation part ("rows" says how many hours it scored).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd


def _scores(y: np.ndarray, pred: np.ndarray, seconds: float) -> dict[str, float]:
    err = pred - y
    nonzero = y != 0
    return {
        "mae": float(np.mean(np.abs(err))),
        "mape": float(np.mean(np.abs(err[nonzero] / y[nonzero])) * 100),
        "rows": len(y),
        "seconds": seconds,
    }


def mlforecast_scores(df: pd.DataFrame, horizon: int, split_at: pd.Timestamp, exogenous: list[str]) -> dict[str, float]:
    from lightgbm import LGBMRegressor
    from mlforecast import MLForecast

    started = time.perf_counter()
    lags = [1, 24, 168] if horizon == 1 else [24, 168]
    model = LGBMRegressor(verbosity=-1, random_state=42)
    fcst = MLForecast(models={"lgbm": model}, freq="h", lags=lags, date_features=["hour", "dayofweek"])
    frame = fcst.preprocess(df[["unique_id", "ds", "y", *exogenous]], static_features=[])
    train, valid = frame[frame["ds"] <= split_at], frame[frame["ds"] > split_at]
    columns = [c for c in frame.columns if c not in ("unique_id", "ds", "y")]
    fcst.fit_models(train[columns], train["y"].to_numpy())
    pred = fcst.models_["lgbm"].predict(valid[columns])
    return _scores(valid["y"].to_numpy(), np.asarray(pred, dtype="float64"), time.perf_counter() - started)


MSTL_HOURLY_MAX = 1_000
MSTL_DAYS_MAX = 28


def mstl_scores(df: pd.DataFrame, horizon: int, split_at: pd.Timestamp) -> dict[str, float] | None:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL

    started = time.perf_counter()
    series = df[["unique_id", "ds", "y"]]
    valid_rows = int((series["ds"] > split_at).sum())
    sf = StatsForecast(models=[MSTL(season_length=[24, 168])], freq="h")
    if horizon == 1 and valid_rows > MSTL_HOURLY_MAX:
        return None
    if horizon == 1:
        cv = sf.cross_validation(df=series, h=1, step_size=1, n_windows=valid_rows, refit=False)
    else:
        first = series.loc[series["ds"] > split_at, "ds"]
        midnight = first[first.dt.hour == 0]
        start = midnight.iloc[0] if len(midnight) else first.iloc[0]
        windows = min(MSTL_DAYS_MAX, int((series["ds"] >= start).sum()) // 24)
        kept = series[series["ds"] < start + pd.Timedelta(hours=24 * windows)]
        cv = sf.cross_validation(df=kept, h=24, step_size=24, n_windows=windows, refit=False)
    return _scores(cv["y"].to_numpy(), cv["MSTL"].to_numpy(dtype="float64"), time.perf_counter() - started)


def main(frame_path: str, spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    raw = pd.read_csv(frame_path, parse_dates=["timestamp"])
    df = raw.rename(columns={"timestamp": "ds", "load": "y"})
    zone = spec.get("timezone") or "UTC"  # the local clock, as naive times (no DST change in a window is assumed)
    df["ds"] = df["ds"].dt.tz_convert(zone).dt.tz_localize(None)
    if df["ds"].duplicated().any():
        raise SystemExit(f"the window crosses a DST change in {zone}: naive local times repeat")
    df.insert(0, "unique_id", "series")
    split_at = pd.Timestamp(spec["split_at"]).tz_convert(zone).tz_localize(None)
    out = {"mlforecast": mlforecast_scores(df, spec["horizon"], split_at, spec["exogenous"])}
    if spec.get("mstl", True):
        out["mstl"] = mstl_scores(df, spec["horizon"], split_at)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
