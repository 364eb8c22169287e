"""Neural networks in PyTorch: ``mlp`` (a feed-forward net on each row) and ``lstm`` (an
LSTM on sliding windows of ``lookback`` rows; for unlabeled anomaly detection an LSTM
autoencoder whose reconstruction error is the score).

Inputs and regression targets are standardised with the training part's mean and
standard deviation (stored with the weights). Training is deterministic for a seed:
seeded initialisation and batch order, deterministic kernels, a fixed thread count.
``early_stopping_rounds`` is the patience in epochs on the tune part; the best epoch's
weights are kept. Models are saved as safetensors (weights, scalers) with the
architecture in the file's metadata — no pickle.

Hyperparameters — mlp: hidden_sizes [64, 32], dropout 0.0, epochs 50, batch_size 256,
learning_rate 0.001, weight_decay 0.0; lstm: hidden_size 64, num_layers 1, lookback 24,
dropout 0.0, epochs 30, batch_size 256, learning_rate 0.001, weight_decay 0.0.
``training_options.batch_size`` overrides batch_size.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainers.algorithms.base import (
    CLASSIFICATION,
    MAX_WEIGHTS,
    MONITOR_ROWS,
    RECONSTRUCTION,
    REGRESSION,
    TORCH_DDP,
    Algorithm,
    FitOptions,
    Param,
    Peers,
    Task,
    TrainData,
)

COMMON: Mapping[str, Param] = {
    "dropout": Param(float, 0, 0.9),
    "epochs": Param(int, 1, 10_000),
    "batch_size": Param(int, 1, 1_000_000),
    "learning_rate": Param(float, 0, 1, exclusive_minimum=True),
    "weight_decay": Param(float, 0, 1),
}
MLP_PARAMS: Mapping[str, Param] = {"hidden_sizes": Param(list, 1, 4096), **COMMON}
MAX_MLP_LAYERS = 16
LSTM_PARAMS: Mapping[str, Param] = {
    "hidden_size": Param(int, 1, 4096),
    "num_layers": Param(int, 1, 8),
    "lookback": Param(int, 2, 720, help="hours of context, at most 30 days"),
    **COMMON,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_sizes": [64, 32], "dropout": 0.0, "epochs": 50, "batch_size": 256, "learning_rate": 1e-3, "weight_decay": 0.0},
    "lstm": {
        "hidden_size": 64,
        "num_layers": 1,
        "lookback": 24,
        "dropout": 0.0,
        "epochs": 30,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
    },
}


def _torch(num_threads: int, seed: int, gpu: bool) -> Any:
    import torch

    torch.set_num_threads(max(1, num_threads))
    torch.manual_seed(seed)
    if gpu:  # CPU kernels are deterministic with a fixed thread count; CUDA's need asking
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch


def _build(kind: str, arch: Mapping[str, Any]) -> Any:
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            width = arch["inputs"]
            for size in arch["hidden_sizes"]:
                layers += [nn.Linear(width, size), nn.ReLU()]
                if arch["dropout"]:  # a p=0 dropout still costs a pass per batch
                    layers.append(nn.Dropout(arch["dropout"]))
                width = size
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return self.net(x).squeeze(-1)

    class LSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            drop = arch["dropout"] if arch["num_layers"] > 1 else 0.0
            self.encoder = nn.LSTM(arch["inputs"], arch["hidden_size"], arch["num_layers"], batch_first=True, dropout=drop)
            if arch["task"] == RECONSTRUCTION:
                self.decoder = nn.LSTM(arch["hidden_size"], arch["hidden_size"], arch["num_layers"], batch_first=True, dropout=drop)
                self.out = nn.Linear(arch["hidden_size"], arch["inputs"])
            else:
                self.out = nn.Linear(arch["hidden_size"], 1)

        def forward(self, x: Any) -> Any:
            encoded, _ = self.encoder(x)
            last = encoded[:, -1, :]
            if arch["task"] == RECONSTRUCTION:
                repeated = last.unsqueeze(1).repeat(1, x.shape[1], 1)
                decoded, _ = self.decoder(repeated)
                return self.out(decoded)
            return self.out(last).squeeze(-1)

    del torch
    return MLP() if kind == "mlp" else LSTM()


def _windows(x: np.ndarray, lookback: int) -> np.ndarray:
    if len(x) < lookback:
        return np.empty((0, lookback, x.shape[1]), dtype="float32")
    return np.lib.stride_tricks.sliding_window_view(x, (lookback, x.shape[1]))[:, 0].astype("float32")


@dataclass
class NeuralModel:
    net: Any
    kind: str
    arch: dict[str, Any]
    scalers: dict[str, np.ndarray]
    device: str = "cpu"
    best_iteration: int | None = None

    @property
    def context_rows(self) -> int:
        return self.arch["lookback"] - 1 if self.kind == "lstm" else 0

    def _inputs(self, features: np.ndarray) -> np.ndarray:
        x = ((features - self.scalers["x_mean"]) / self.scalers["x_std"]).astype("float32")
        return _windows(x, self.arch["lookback"]) if self.kind == "lstm" else x

    def predict(self, features: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        inputs = self._inputs(features)
        outs = []
        with torch.no_grad():
            for i in range(0, len(inputs), 4096):
                batch = torch.from_numpy(inputs[i : i + 4096]).to(self.device)
                out = self.net(batch)
                if self.arch["task"] == RECONSTRUCTION:
                    out = ((out - batch) ** 2).mean(dim=(1, 2))
                elif self.arch["task"] == CLASSIFICATION:
                    out = torch.sigmoid(out)
                outs.append(out.cpu().numpy())
        pred = np.concatenate(outs) if outs else np.empty(0)
        if self.arch["task"] == REGRESSION:
            pred = pred * self.scalers["y_std"][0] + self.scalers["y_mean"][0]
        return pred.astype("float64")

    def save(self, directory: Path) -> Path:
        import torch
        from safetensors.torch import save_file

        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        tensors.update({f"scaler.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.scalers.items()})
        path = directory / "model.safetensors"
        save_file(tensors, str(path), metadata={"kind": self.kind, "arch": json.dumps(self.arch)})
        return path

    def importance(self, names: tuple[str, ...]) -> dict[str, float]:
        return {}


class Neural(Algorithm):
    library = "torch._dynamo"  # torch, and what its optimisers import on their first use
    early_stopping = True
    rounds_param = "epochs"
    supports_gpu = True
    minibatch = True
    data_parallel = TORCH_DDP

    def __init__(self, kind: str) -> None:
        self.name = kind
        self.kind = kind
        self.params = MLP_PARAMS if kind == "mlp" else LSTM_PARAMS
        self.tasks = frozenset({REGRESSION, CLASSIFICATION, RECONSTRUCTION} if kind == "lstm" else {REGRESSION, CLASSIFICATION})
        # On an unlabelled signal the LSTM is an autoencoder (its reconstruction error scores a window).
        self.unlabelled_task = RECONSTRUCTION if kind == "lstm" else REGRESSION
        self.search_space = {
            "learning_rate": {"type": "loguniform", "lower": 0.0003, "upper": 0.01},
            "dropout": {"type": "uniform", "lower": 0.0, "upper": 0.3},
            **({"hidden_size": {"type": "randint", "lower": 16, "upper": 96}} if kind == "lstm" else {}),
            **({"weight_decay": {"type": "loguniform", "lower": 0.000001, "upper": 0.001}} if kind == "mlp" else {}),
        }

    def size_violations(self, hyperparameters: Mapping[str, Any], n_inputs: int) -> Iterator[tuple[str, str]]:
        hp = {**DEFAULTS[self.kind], **hyperparameters}
        try:
            if self.kind == "mlp":
                sizes = [int(v) for v in hp["hidden_sizes"]]
                if len(sizes) > MAX_MLP_LAYERS:
                    yield "hidden_sizes", f"{len(sizes)} layers; at most {MAX_MLP_LAYERS} are allowed"
                    return
                widths = [n_inputs, *sizes, 1]
                weights = sum((a + 1) * b for a, b in itertools.pairwise(widths))
                name = "hidden_sizes"
            else:
                h, layers = int(hp["hidden_size"]), int(hp["num_layers"])
                weights = sum(4 * (h * ((n_inputs if i == 0 else h) + h) + 2 * h) for i in range(layers)) + h + 1
                name = "hidden_size"
        except (TypeError, ValueError):
            return  # the parameter checks report the malformed value
        if weights > MAX_WEIGHTS:
            yield name, f"the model would have {weights:,} weights; at most {MAX_WEIGHTS:,} are allowed"

    def context_rows(self, hyperparameters: Mapping[str, Any]) -> int:
        """An LSTM predicts a row from the ``lookback`` rows ending at it."""
        return int(hyperparameters.get("lookback", DEFAULTS["lstm"]["lookback"])) - 1 if self.kind == "lstm" else 0

    def fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions) -> NeuralModel:
        return self._fit(data, hyperparameters, options, Peers(0, 1))

    def fit_shard(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> NeuralModel:
        """DDP (the process group is set up by the caller: server/execution/distributed.py):
        each worker runs batch_size / workers rows of each step on its shard and the
        gradients are averaged, so a step sees batch_size rows as on one node. Inputs are
        scaled by the whole fit part's statistics; every worker runs the same number of
        steps and the same early-stopping decision."""
        return self._fit(data, hyperparameters, options, peers)

    def _fit(self, data: TrainData, hyperparameters: Mapping[str, Any], options: FitOptions, peers: Peers) -> NeuralModel:  # noqa: PLR0912, PLR0915 - one seeded training loop, read top to bottom
        import torch

        device = "cuda" if options.use_gpu and torch.cuda.is_available() else "cpu"
        torch = _torch(options.num_threads, options.seed, device == "cuda")
        hp = {**DEFAULTS[self.kind], **hyperparameters}
        if options.batch_size:
            hp["batch_size"] = options.batch_size
        stats = peers.stats or {
            "x_mean": data.x_train.mean(axis=0),
            "x_std": data.x_train.std(axis=0),
            "y_mean": np.array([data.y_train.mean()]),
            "y_std": np.array([data.y_train.std()]),
        }
        x_mean = stats["x_mean"]
        x_std = np.where(stats["x_std"] > 0, stats["x_std"], 1.0)
        y_mean = stats["y_mean"] if options.task == REGRESSION else np.zeros(1)
        y_std = np.array([stats["y_std"][0] or 1.0]) if options.task == REGRESSION else np.ones(1)
        arch = {"inputs": data.x_train.shape[1], "task": options.task, "dropout": float(hp["dropout"])}
        if self.kind == "mlp":
            arch["hidden_sizes"] = [int(s) for s in hp["hidden_sizes"]]
        else:
            arch.update(hidden_size=int(hp["hidden_size"]), num_layers=int(hp["num_layers"]), lookback=int(hp["lookback"]))
        model = NeuralModel(
            _build(self.kind, arch).to(device),
            self.kind,
            arch,
            {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std},
            device,
        )

        def targets(y: np.ndarray) -> np.ndarray:
            y = (y - y_mean[0]) / y_std[0]
            return y[model.context_rows :].astype("float32")

        x_fit = model._inputs(data.x_train)
        y_fit = targets(data.y_train)
        if model.context_rows and data.train_groups is not None:
            # Keep the windows whose first and last rows are of one series.
            groups = data.train_groups
            within = groups[model.context_rows :] == groups[: len(groups) - model.context_rows]
            x_fit, y_fit = x_fit[within], y_fit[within]
        x_tune: np.ndarray | None = None
        y_tune: np.ndarray | None = None
        if len(data.y_tune):
            context = data.x_train[len(data.x_train) - model.context_rows :] if model.context_rows else data.x_train[:0]
            x_tune = model._inputs(np.concatenate([context, data.x_tune]))
            y_tune = ((data.y_tune - y_mean[0]) / y_std[0]).astype("float32")
        if len(x_fit) == 0:
            raise ValueError(f"not enough training rows for lookback {arch.get('lookback')}")

        def loss_of(out: Any, x: Any, y: Any) -> Any:
            if options.task == RECONSTRUCTION:
                return torch.nn.functional.mse_loss(out, x)
            if options.task == CLASSIFICATION:
                return torch.nn.functional.binary_cross_entropy_with_logits(out, y)
            return torch.nn.functional.mse_loss(out, y)

        # Several workers: DDP averages the gradients of each step over the workers.
        together = peers.size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
        net = torch.nn.parallel.DistributedDataParallel(model.net) if together else model.net
        optimiser = torch.optim.Adam(model.net.parameters(), lr=float(hp["learning_rate"]), weight_decay=float(hp["weight_decay"]))
        rng = np.random.default_rng(options.seed + peers.rank)
        epochs, batch = int(hp["epochs"]), -(-int(hp["batch_size"]) // peers.size)
        steps = -(-len(x_fit) // batch)
        if together:  # every worker runs as many steps as the smallest shard allows
            count = torch.tensor([steps], dtype=torch.int64, device=device)  # NCCL reduces only GPU tensors
            torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
            steps = int(count.item())
        best_loss, best_state, best_epoch, waited = float("inf"), None, None, 0
        xt, yt = torch.from_numpy(x_fit).to(device), torch.from_numpy(y_fit).to(device)
        for epoch in range(1, epochs + 1):
            net.train()
            order = torch.from_numpy(rng.permutation(len(x_fit))).to(device)
            for i in range(0, steps * batch, batch):
                idx = order[i : i + batch]
                xb, yb = xt[idx], yt[idx]
                optimiser.zero_grad()
                loss = loss_of(net(xb), xb, yb)
                loss.backward()
                optimiser.step()
            options.on_iteration(epoch, epochs)
            if options.on_metrics is not None and options.task == REGRESSION:
                options.on_metrics(epoch, lambda: _monitor(model.net, x_tune, y_tune, xt, yt, float(y_std[0])))
            if x_tune is not None and options.early_stopping_rounds:
                model.net.eval()
                with torch.no_grad():
                    xv = torch.from_numpy(x_tune).to(device)
                    tune_loss = float(loss_of(model.net(xv), xv, torch.from_numpy(y_tune).to(device)))
                if together:  # one decision for all: the workers' (equal) losses, averaged
                    shared = torch.tensor([tune_loss], dtype=torch.float64, device=device)
                    torch.distributed.all_reduce(shared)
                    tune_loss = float(shared.item()) / peers.size
                if tune_loss < best_loss:
                    best_loss, best_epoch, waited = tune_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= options.early_stopping_rounds:
                        break
        if best_state is not None:
            model.net.load_state_dict(best_state)
            model.best_iteration = best_epoch
        return model

    def load(self, path: Path, task: Task) -> NeuralModel:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - a safetensors file, not a dict
        arch = json.loads(meta["arch"])
        net = _build(meta["kind"], arch)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        scalers = {k[7:]: v.numpy() for k, v in tensors.items() if k.startswith("scaler.")}
        return NeuralModel(net, meta["kind"], arch, scalers)


ALGORITHMS = (Neural("mlp"), Neural("lstm"))


def _monitor(net: Any, x_tune: np.ndarray | None, y_tune: np.ndarray | None, xt: Any, yt: Any, y_std: float) -> dict[str, float]:
    """MAE and RMSE, in the target's units, on the tune part (else a spread sample of the
    fit rows), with the network in eval mode for the moment."""
    import torch

    was_training = net.training
    net.eval()
    with torch.no_grad():
        if x_tune is not None and y_tune is not None:
            x, y = torch.from_numpy(x_tune).to(xt.device), torch.from_numpy(y_tune).to(xt.device)
        else:
            step = max(1, len(xt) // MONITOR_ROWS)
            x, y = xt[::step], yt[::step]
        err = (net(x) - y).double()
        mae, rmse = float(err.abs().mean()) * y_std, float(err.pow(2).mean().sqrt()) * y_std
    net.train(was_training)
    return {"mae": mae, "rmse": rmse}
