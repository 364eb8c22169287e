"""Peers side by side (issue 25): what a forecaster would pick instead of the service, on the
same data and the same split as our jobs, 1 h and 24 h ahead.

- ours, default: lgbm with no hyperparameters set (the service's defaults, which are
  LightGBM's own, as mlforecast's are) and the plain features (temperature where the data has
  it, hour of day, day of week, the load lags usable at the horizon);
- ours, tuned: the same features and ``"tuning": {"num_trials": N}`` alone (Optuna's TPE,
  rolling-origin folds);
- mlforecast: Nixtla's mlforecast with LightGBM at its defaults and the same lags, date
  features and known-ahead columns as ours, default;
- MSTL: statsforecast's MSTL (daily and weekly seasons), the statistical baseline.

Data: the demo feeder (generated) and Taylor's England and Wales demand (pmdarima), as in
bench/quality. The split is our job's own (its validation rows, read from the prepared
frame); the peers fit on the rows before it and are scored on the rows after it.

The peers need pandas < 3 and the service pins pandas 3, so they run in an interpreter of
their own: ``make peers`` builds ``.venv-peers`` from bench/peers-requirements.txt (an
optional extra: the service never imports them), and this bench runs
bench/_peers_side.py there on a CSV of the same rows.

    python -m bench.peers [--horizons 1,24] [--trials 30] [--datasets demo,taylor] [--no-mstl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from bench import quality
from server import demo_data
from trainers import preparation, spec
from trainers.local import MemoryReporter

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SIDE = Path(__file__).resolve().parent / "_peers_side.py"


def _split(frame: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, pd.Timestamp, int]:
    """Our job's rows (its training window), split time and number of validation rows."""
    job = spec.build(config)
    window = frame[(frame["timestamp"] >= job.training_start) & (frame["timestamp"] <= job.training_end)]
    prepared = preparation.prepare(window[["timestamp", *job.table_columns()]], job, MemoryReporter())
    return window, pd.Timestamp(prepared.split_at), len(prepared.data.y_valid)


def _peers(window: pd.DataFrame, split_at: pd.Timestamp, config: dict, horizon: int, exogenous: list[str], mstl: bool, tmp: Path) -> dict:
    csv, spec_file = tmp / "frame.csv", tmp / "spec.json"
    window[["timestamp", "load", *exogenous]].to_csv(csv, index=False)
    said = {"horizon": horizon, "split_at": split_at.isoformat(), "exogenous": exogenous, "mstl": mstl, "timezone": config.get("timezone")}
    spec_file.write_text(json.dumps(said))
    done = subprocess.run([str(PEERS_PYTHON), str(SIDE), str(csv), str(spec_file)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the peers' side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizons", default="1,24")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--datasets", default="demo,taylor")
    ap.add_argument("--no-mstl", action="store_true", help="leave MSTL out (its 1 h backtest refits nothing but forecasts every hour)")
    args = ap.parse_args(argv)
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: `make peers` builds it (mlforecast, statsforecast)")
    demo = demo_data.generate()
    tuner, started = quality.ray_tuner()
    print("peers: validation MAE / MAPE % on our job's own split; mlforecast and ours at their defaults, ours also tuned")
    head = f"{'data':7} {'ahead':>5} {'rows':>5} {'ours default':>16} {'mlforecast':>16} {'MSTL':>16} {'ours tuned':>16}"
    print(f"{head} {'ours/mlf':>9} {'mstl rows':>10}")
    try:
        for name, (frame, fields) in quality.datasets(args.datasets.split(","), demo).items():
            exogenous = list(fields.get("known_ahead", []))
            for horizon in [int(h) for h in args.horizons.split(",")]:
                plain = [f for f in quality.features(horizon, False) if exogenous or not f.startswith("temperature")]
                base = {
                    "model_type": "forecast", "algorithm": "lgbm", "target": "load", "random_seed": 42,
                    "forecast_horizon_hours": horizon, **{k: v for k, v in fields.items() if k != "holidays"},
                }  # fmt: skip
                default = {**base, "features": plain, "hyperparameters": {}}
                tuned = {**default, "tuning": {"num_trials": args.trials, "max_concurrent_trials": 2}}
                with tempfile.TemporaryDirectory(prefix="aihub-peers-") as tmp:
                    ours, _, _ = quality.run_job(frame, default, Path(tmp) / "a")
                    searched, _, _ = quality.run_job(frame, tuned, Path(tmp) / "b", tuner)
                    window, split_at, rows = _split(frame, default)
                    peers = _peers(window, split_at, default, horizon, exogenous, not args.no_mstl, Path(tmp))
                mlf = peers["mlforecast"]
                if mlf["rows"] != rows:
                    raise SystemExit(f"{name} {horizon} h: mlforecast scored {mlf['rows']} rows, ours {rows}: not the same split")
                mstl = peers.get("mstl")

                def cell(m: dict | None) -> str:
                    return f"{m['mae']:9.4g} / {m['mape']:4.2f}" if m else f"{'-':>16}"

                print(
                    f"{name:7} {horizon:>4}h {rows:5d} {cell(ours)} {cell(mlf)} {cell(mstl)} {cell(searched)} "
                    f"{ours['mae'] / mlf['mae']:9.3f} {mstl['rows'] if mstl else '-':>10}"
                )
    finally:
        if started:
            import ray

            ray.shutdown()
    print("  ours/mlf: our default MAE over mlforecast's (goal <= 1.0)")
    print("  MSTL at 24 h: day-ahead from each midnight (1..24 h), the first 28 days at most; at 1 h: a forecast from every hour,")
    print("  left out (-) beyond 1,000 validation hours (each forecast decomposes the series again); MSTL's own rows: mstl rows")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--horizons", "24", "--trials", "2", "--datasets", "taylor"]

if __name__ == "__main__":
    main()
