"""Algorithms describe themselves: what differs between them is declared on the algorithm,
so nothing outside trainers/algorithms/ names one, and adding one is adding one file."""

from __future__ import annotations

import ast
import textwrap

import pytest

from server.demo_data import generate
from tests.conftest import ROOT
from trainers import algorithms, pipeline, spec
from trainers.local import FolderRegistry, FrameSource, MemoryReporter


def test_nothing_outside_the_algorithms_package_names_an_algorithm():
    names = set(algorithms.ALL)
    found = []
    for package in ("trainers", "server", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            if "algorithms" in path.relative_to(ROOT).parts:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and node.value in names
            ]
    assert not found, "special-cased by name:\n" + "\n".join(found)


def test_traits_are_declared():
    assert algorithms.with_trait("supports_gpu") == ("lstm", "mlp")
    assert algorithms.with_trait("minibatch") == ("lstm", "mlp")
    assert {n: algorithms.get(n).unlabelled_task for n in ("lstm", "isolation_forest", "lgbm")} == {
        "lstm": algorithms.RECONSTRUCTION,
        "isolation_forest": algorithms.RECONSTRUCTION,
        "lgbm": algorithms.REGRESSION,
    }
    assert algorithms.get("lstm").context_rows({"lookback": 48}) == 47 and algorithms.get("lgbm").context_rows({}) == 0
    assert "isolation_forest" not in algorithms.FORECASTERS


MEAN_MODULE = '''
"""A toy algorithm: predicts the training mean. Everything it needs is in this file."""

from pathlib import Path

import numpy as np

from trainers.algorithms.base import REGRESSION, Algorithm, Param


class MeanModel:
    best_iteration = None
    context_rows = 0

    def __init__(self, value):
        self.value = value

    def predict(self, features):
        return np.full(len(features), self.value)

    def save(self, directory):
        path = Path(directory) / "mean.txt"
        path.write_text(repr(self.value))
        return path

    def importance(self, names):
        return {}


class Mean(Algorithm):
    name = "mean"
    library = "numpy"
    params = {"shrink": Param(float, 0, 1)}
    tasks = frozenset({REGRESSION})

    def fit(self, data, hyperparameters, options):
        options.on_iteration(1, 1)
        return MeanModel(float(data.y_train.mean()) * (1 - hyperparameters.get("shrink", 0.0)))

    def load(self, path, task):
        return MeanModel(float(Path(path).read_text()))


ALGORITHMS = (Mean(),)
'''


def test_an_algorithm_is_one_file(tmp_path, monkeypatch):
    (tmp_path / "mean.py").write_text(textwrap.dedent(MEAN_MODULE))
    monkeypatch.setattr(algorithms, "__path__", [*algorithms.__path__, str(tmp_path)])
    registry = algorithms._discover()
    assert "mean" in registry
    monkeypatch.setattr(algorithms, "REGISTRY", registry)
    monkeypatch.setattr(algorithms, "ALL", tuple(registry))
    cfg = {
        "model_type": "forecast", "algorithm": "mean", "hyperparameters": {"shrink": 0.0},
        "training_start": "2024-01-01T00:00:00", "training_end": "2024-01-31T23:00:00",
        "features": ["temperature", "hour_of_day"], "target": "load",
    }  # fmt: skip
    assert [v.field for v in spec.validate({**cfg, "hyperparameters": {"shrink": 2}})] == ["hyperparameters.shrink"]
    assert [v.field for v in spec.validate({**cfg, "training_options": {"batch_size": 8}})] == ["training_options.batch_size"]
    frame = generate("2024-01-01 00:00", "2024-01-31 23:00")
    result = pipeline.run(spec.build(cfg), data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(tmp_path / "m"))
    assert result.metrics["mae"] > 0 and result.artifact.name == "mean.txt"


def test_a_name_declared_twice_is_refused(tmp_path, monkeypatch):
    (tmp_path / "again.py").write_text(textwrap.dedent(MEAN_MODULE).replace('name = "mean"', 'name = "lgbm"'))
    monkeypatch.setattr(algorithms, "__path__", [*algorithms.__path__, str(tmp_path)])
    with pytest.raises(RuntimeError, match="declared twice"):
        algorithms._discover()
