"""Checks the distributed (DDP) path of the neural algorithms on a GPU: mlp and lstm trained
by trainers.distributed.fit_worker in 2 processes sharing one GPU (gloo, CUDA tensors; on a
cluster each worker actor holds its own GPU and joins an NCCL process group:
server/execution/distributed.py), against the same
model trained in one process on the GPU and on the CPU. Prints time and validation MAE.
Needs torch with CUDA, numpy and pandas only (no Ray).

    python scripts/gpu_ddp_check.py      # exits 1 when a GPU run did not use the GPU
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.multiprocessing as mp

from server.demo_data import generate
from trainers import algorithms, distributed, spec
from trainers.local import FrameSource, MemoryReporter
from trainers.preparation import prepare

FEATURES = ["temperature", "humidity", "hour_of_day", "day_of_week", "load_lag_1", "load_lag_24"]


def _data(algorithm: str, hp: dict, use_gpu: bool):
    cfg = {
        "model_type": "forecast",
        "algorithm": algorithm,
        "hyperparameters": hp,
        "features": FEATURES,
        "target": "load",
        "training_start": "2024-01-01T00:00:00",
        "training_end": "2024-12-31T23:00:00",
        "random_seed": 1,
        "early_stopping_rounds": 5,
        "ray_config": {"use_gpu": use_gpu},
    }
    s = spec.build(cfg)
    source = FrameSource(generate("2023-12-31 00:00", "2024-12-31 23:00"))
    frame = source.load(s.feature_table, s.table_columns(), s.training_start, s.training_end)
    prepared = prepare(frame, s, MemoryReporter())
    options = algorithms.FitOptions(
        task=prepared.task, seed=1, early_stopping_rounds=5, num_threads=4, batch_size=None, use_gpu=use_gpu, on_iteration=lambda d, t: None
    )
    return s, prepared, options


def _mae(model, prepared) -> float:
    from trainers.evaluation import predict_after

    d = prepared.data
    pred = predict_after(model, np.concatenate([d.x_train, d.x_tune]) if len(d.y_tune) else d.x_train, d.x_valid)
    return float(np.abs(pred - d.y_valid).mean())


def _rank(rank: int, world: int, port: int, algorithm: str, hp: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    s, prepared, options = _data(algorithm, hp, True)
    plan, shards = distributed.plan(algorithm, s.hyperparameters, prepared.data, options, world)
    model = distributed.fit_worker(plan, shards[rank], rank=rank, network={}, on_iteration=lambda d, t: None)
    if rank == 0:
        Path(out).write_text(f"{_mae(model, prepared)} {model.device} {model.best_iteration}")
    torch.distributed.destroy_process_group()


def main() -> int:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    print("torch", torch.__version__, "cuda:", torch.cuda.is_available(), gpu)
    failed = 0
    for algorithm, hp in (("mlp", {"epochs": 30, "batch_size": 512}), ("lstm", {"epochs": 8, "lookback": 24})):
        for use_gpu in (False, True):
            s, prepared, options = _data(algorithm, hp, use_gpu)
            t = time.perf_counter()
            model = algorithms.get(algorithm).fit(prepared.data, s.hyperparameters, options)
            took = time.perf_counter() - t
            mae = _mae(model, prepared)
            print(f"{algorithm:5s} one process  use_gpu={use_gpu!s:5s} device {model.device:4s} {took:6.1f} s MAE {mae:.4f}")
            failed += use_gpu and torch.cuda.is_available() and model.device != "cuda"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        out = str(Path(tempfile.mkdtemp()) / "rank0.txt")
        t = time.perf_counter()
        mp.spawn(_rank, args=(2, port, algorithm, hp, out), nprocs=2, join=True)
        mae, device, best = Path(out).read_text().split()
        took = time.perf_counter() - t
        print(f"{algorithm:5s} DDP 2 ranks  use_gpu=True  device {device:4s} {took:6.1f} s MAE {float(mae):.4f} (best epoch {best})")
        failed += torch.cuda.is_available() and device != "cuda"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
