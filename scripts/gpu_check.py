"""Checks the use_gpu paths of the neural algorithms on a machine with a GPU (the suite
runs without one). Trains mlp and lstm through the real pipeline on generated data, with
ray_config.use_gpu on and off, and prints device, time and metrics of each.

    python scripts/gpu_check.py        # exits 1 when a GPU run did not use the GPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from server.demo_data import generate
from trainers import pipeline, spec
from trainers.local import FolderRegistry, FrameSource, MemoryReporter


def main() -> int:
    print(
        "torch",
        torch.__version__,
        "cuda available:",
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    )
    df = generate("2024-01-01 00:00", "2024-12-31 23:00")
    features = ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_1", "load_lag_24"]
    cases = [
        ("mlp", "forecast", {"epochs": 30, "batch_size": 512}),
        ("lstm", "forecast", {"epochs": 10, "lookback": 24}),
        ("lstm", "anomaly", {"epochs": 5, "lookback": 24}),
    ]
    failed = 0
    for algo, model_type, hp in cases:
        for gpu in (False, True):
            cfg = {
                "model_type": model_type,
                "algorithm": algo,
                "hyperparameters": hp,
                "features": features,
                "target": "load",
                "training_start": "2024-01-01T00:00:00",
                "training_end": "2024-12-31T23:00:00",
                "random_seed": 1,
                "early_stopping_rounds": 5,
                "ray_config": {"use_gpu": gpu},
            }
            log = MemoryReporter()
            t = time.perf_counter()
            result = pipeline.run(spec.build(cfg), data=FrameSource(df), reporter=log, registry=FolderRegistry())
            warned = any("no GPU" in m for _, m in log.lines)
            m = result.metrics
            headline = {k: round(m[k], 4) for k in ("mae", "rmse", "r2_score", "anomaly_rate", "threshold") if k in m}
            print(
                f"{algo:5s} {model_type:8s} use_gpu={gpu!s:5s} no-GPU warning={warned!s:5s} "
                f"{time.perf_counter() - t:6.1f}s train {m['training_duration_seconds']:.1f}s "
                f"best epoch {m.get('best_iteration')} {headline}"
            )
            if gpu and torch.cuda.is_available() and warned:
                failed += 1
            # the saved model reloads on the CPU
            from trainers import algorithms

            model = algorithms.get(algo).load(result.artifact, "regression" if model_type == "forecast" else "reconstruction")
            assert model.device == "cpu"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
