"""The algorithm registry. Each module of this package declares its algorithms in a tuple
``ALGORITHMS``: their hyperparameters (names, types, ranges), the tasks they can do and
what they need (``trainers.algorithms.base.Algorithm``), without importing their library;
the library is imported only when a model trains or loads. Adding an algorithm is adding
one module here: the registry finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from trainers.algorithms.base import (
    CLASSIFICATION,
    RECONSTRUCTION,
    REGRESSION,
    Algorithm,
    FitOptions,
    FittedModel,
    Param,
    Peers,
    TrainData,
    importance_from,
)

__all__ = [
    "ALL",
    "CLASSIFICATION",
    "FORECASTERS",
    "RECONSTRUCTION",
    "REGISTRY",
    "REGRESSION",
    "Algorithm",
    "FitOptions",
    "FittedModel",
    "Param",
    "Peers",
    "TrainData",
    "get",
    "importance_from",
    "with_trait",
]


def _discover() -> dict[str, Algorithm]:
    found: dict[str, Algorithm] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for algorithm in getattr(module, "ALGORITHMS", ()):
            if algorithm.name in found:
                raise RuntimeError(f"algorithm {algorithm.name!r} is declared twice (second time in {module.__name__})")
            found[algorithm.name] = algorithm
    return dict(sorted(found.items()))


REGISTRY: Mapping[str, Algorithm] = _discover()
ALL: tuple[str, ...] = tuple(REGISTRY)
# The algorithms that can forecast (predict the target itself).
FORECASTERS: tuple[str, ...] = tuple(name for name, algorithm in REGISTRY.items() if REGRESSION in algorithm.tasks)


def get(name: str) -> Algorithm:
    return REGISTRY[name]


def with_trait(trait: str) -> tuple[str, ...]:
    """The names of the algorithms whose boolean ``trait`` (supports_gpu, minibatch, ...) is set."""
    return tuple(name for name, algorithm in REGISTRY.items() if getattr(algorithm, trait))
