"""Anomaly detection against the plain detector (issue 25), in one run: on generated signals
with known incidents (the demo feeder's load, with spikes, drops and level shifts of a few
hours injected and labelled), the service's detectors (trainers.pipeline.run, the code a job
runs) against scikit-learn's IsolationForest on the raw value alone with contamination set to
the label rate, scored on the same validation rows (the last 30 %): point-wise F1 and the
incident windows caught.

And on a real labelled series a PyPI package ships: aeon's KDD-TSAD 135 (UCR anomaly
archive, "InternalBleeding16": a patient's heart rate, 7,501 points, one labelled incident of
12 points), read from the aeon installed in .venv-peers (``make peers``; aeon needs pandas
< 3.1). Its points are taken as hours; validation is its second half (the incident is at
points 4,187..4,198); the contamination of both detectors is the series' label rate.

    python -m bench.anomaly [--seeds 3] [--days 180] [--no-public]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from server import demo_data
from trainers import metrics, pipeline, spec
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

SPLIT = 0.3


def signal(seed: int, days: int) -> pd.DataFrame:
    """The demo load with incidents: every ~5 days one of a spike (+60 %), a drop (-50 %) or a
    level shift (+25 %), lasting 2 to 8 hours."""
    frame = demo_data.generate(
        "2024-01-01 00:00", f"{pd.Timestamp('2024-01-01') + pd.Timedelta(days=days) - pd.Timedelta(hours=1):%Y-%m-%d %H:%M}", seed=seed
    )
    rng = np.random.default_rng(seed)
    load = frame["load"].to_numpy().copy()
    label = np.zeros(len(load))
    at = 48
    while at < len(load) - 12:
        length = int(rng.integers(2, 9))
        kind = rng.choice(["spike", "drop", "shift"])
        load[at : at + length] *= {"spike": 1.6, "drop": 0.5, "shift": 1.25}[kind]
        label[at : at + length] = 1
        at += int(rng.integers(24 * 3, 24 * 7))
    return pd.DataFrame({"timestamp": frame["timestamp"], "load": load, "temperature": frame["temperature"], "incident": label})


def score(labels: np.ndarray, flagged: np.ndarray, stamps: np.ndarray) -> dict[str, float]:
    out = metrics.classification(labels, flagged.astype(float), 0.5)
    out.update(metrics.events(labels, flagged, stamps))
    return out


CONTEXT = ["temperature", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168"]
RESIDUAL = {"algorithm": "lgbm", "hyperparameters": {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31}}


def ours(
    frame: pd.DataFrame, features: list[str], threshold: dict | None, root: Path, split: float = SPLIT, **algorithm: object
) -> dict[str, float]:
    config = {
        "model_type": "anomaly", "algorithm": "isolation_forest", "hyperparameters": {"n_estimators": 200}, "target": "load", **algorithm,
        "features": features, "label_column": "incident", "validation_split": split, "random_seed": 42,
        "training_start": f"{frame['timestamp'].min():%Y-%m-%dT%H:%M:%S}", "training_end": f"{frame['timestamp'].max():%Y-%m-%dT%H:%M:%S}",
        **({"threshold": threshold} if threshold else {}),
    }  # fmt: skip
    result = pipeline.run(spec.build(config), data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(root))
    return dict(result.metrics)


PEERS_PYTHON = Path(__file__).resolve().parent.parent / ".venv-peers" / "bin" / "python"
KDD_135 = "datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv"
PUBLIC_SPLIT = 0.5


def public() -> pd.DataFrame:
    """aeon's KDD-TSAD 135 series, its points as hours from 2024-01-01."""
    where = "import importlib.util as u; print(u.find_spec('aeon').submodule_search_locations[0])"
    done = subprocess.run([str(PEERS_PYTHON), "-c", where], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"aeon is not in {PEERS_PYTHON} (`make peers` installs it): {done.stderr[-500:]}")
    raw = pd.read_csv(Path(done.stdout.strip()) / KDD_135)
    stamps = pd.date_range("2024-01-01", periods=len(raw), freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "load": raw["value"].astype(float), "incident": raw["is_anomaly"].astype(float)})


def plain(frame: pd.DataFrame, rate: float, split: float = SPLIT) -> dict[str, float]:
    """The three-line script: IsolationForest on the value alone, contamination = the rate."""
    cut = int(len(frame) * (1 - split))
    train, valid = frame.iloc[:cut], frame.iloc[cut:]
    model = IsolationForest(n_estimators=200, contamination=rate, random_state=42).fit(train[["load"]])
    flagged = model.predict(valid[["load"]]) == -1
    return score(valid["incident"].to_numpy(), flagged, valid["timestamp"].to_numpy())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--no-public", action="store_true", help="leave out the public labelled series (aeon's KDD-TSAD 135)")
    a = ap.parse_args(argv)
    print(f"anomaly: {a.days} days hourly, incidents every 3-7 days (2-8 h); validation: the last {SPLIT:.0%}; mean over {a.seeds} seeds")
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in range(a.seeds):
        frame = signal(seed, a.days)
        rate = float(frame["incident"].iloc[: int(len(frame) * (1 - SPLIT))].mean())
        with tempfile.TemporaryDirectory(prefix="aihub-anomaly-") as tmp:
            contamination = {"method": "contamination", "value": rate}
            runs = {
                "plain IsolationForest, value alone, contamination = label rate": plain(frame, rate),
                "ours: isolation_forest, value alone, default threshold (p99)": ours(frame, [], None, Path(tmp) / "a"),
                "ours: isolation_forest, value alone, contamination": ours(frame, [], contamination, Path(tmp) / "b"),
                "ours: ecod, value alone, contamination": ours(
                    frame, [], contamination, Path(tmp) / "e", algorithm="ecod", hyperparameters={}
                ),
                "ours: lgbm residual (weather, calendar, lags), contamination": ours(
                    frame, CONTEXT, contamination, Path(tmp) / "c", **RESIDUAL
                ),
                "ours: lgbm residual (weather, calendar, lags), default p99": ours(frame, CONTEXT, None, Path(tmp) / "d", **RESIDUAL),
            }
        for name, m in runs.items():
            rows.setdefault(name, []).append(m)
    print(f"{'detector':66} {'F1':>6} {'precision':>9} {'recall':>6} {'caught':>9}")
    for name, runs_ in rows.items():
        mean = {
            k: float(np.mean([r.get(k, np.nan) for r in runs_])) for k in ("f1", "precision", "recall", "windows_caught", "windows_total")
        }
        caught = f"{mean['windows_caught']:4.1f}/{mean['windows_total']:<4.1f}"
        print(f"{name:66} {mean['f1']:6.3f} {mean['precision']:9.3f} {mean['recall']:6.3f} {caught:>9}")
    if not a.no_public:
        public_table()


def public_table() -> None:
    frame = public()
    rate = float(frame["incident"].mean())
    print()
    print(f"anomaly, public: aeon's KDD-TSAD 135 (heart rate, {len(frame)} points as hours, label rate {rate:.2%})")
    print("  validation: its second half")
    contamination = {"method": "contamination", "value": rate}
    lags = ["load_lag_1", "load_lag_2", "load_lag_24"]
    with tempfile.TemporaryDirectory(prefix="aihub-anomaly-") as tmp:
        runs = {
            "plain IsolationForest, value alone, contamination = label rate": plain(frame, rate, PUBLIC_SPLIT),
            "ours: isolation_forest, value alone, contamination": ours(frame, [], contamination, Path(tmp) / "a", PUBLIC_SPLIT),
            "ours: isolation_forest, value alone, default threshold (p99)": ours(frame, [], None, Path(tmp) / "b", PUBLIC_SPLIT),
            "ours: ecod, value alone, contamination": ours(
                frame, [], contamination, Path(tmp) / "e", PUBLIC_SPLIT, algorithm="ecod", hyperparameters={}
            ),
            "ours: lgbm residual (lags 1, 2, 24 h), contamination": ours(
                frame, lags, contamination, Path(tmp) / "c", PUBLIC_SPLIT, **RESIDUAL
            ),
        }
    print(f"{'detector':66} {'F1':>6} {'precision':>9} {'recall':>6} {'caught':>9} {'delay h':>8}")
    for name, m in runs.items():
        caught = f"{m.get('windows_caught', 0):.0f}/{m.get('windows_total', 0):.0f}"
        delay = m.get("detection_delay_hours_median", float("nan"))
        print(f"{name:66} {m['f1']:6.3f} {m['precision']:9.3f} {m['recall']:6.3f} {caught:>9} {delay:8.1f}")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--seeds", "1", "--days", "60"]  # and the public series (7,501 rows)

if __name__ == "__main__":
    main()
