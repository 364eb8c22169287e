"""Custom preprocessing, installed by the operator: the counterpart of the guide's
``CustomPipeline.preprocess_data``, without tenants ever sending code.

A preprocessor is a class registered under the entry point group ``aihub.preprocessors``
(``name = "package.module:Class"`` in its package's metadata) and installed on every node
that trains. A config selects one by name (``"preprocessor": "load_times_temperature"``);
the preprocessing step then calls ``apply`` on the loaded window (a ``timestamp`` column,
``series_id`` when there are several series, and ``inputs``) and may use its ``outputs`` as
features. The class says:

- ``inputs``: the feature-table columns it reads (loaded with the job's columns);
- ``outputs``: the columns it adds (numbers, one per row);
- ``safe_horizon_hours``: its outputs for hour t use nothing of the target or of a column not
  known in advance newer than t - safe_horizon_hours, so a job forecasting further ahead
  than that is refused as leakage (0: outputs may read the target hour itself);
- ``apply(frame) -> frame``: the frame with the outputs added, rows unchanged.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trainers.errors import TrainingError

GROUP = "aihub.preprocessors"
_shipped: dict[str, str] = {}  # name -> "module:attribute" of preprocessors shipped, not installed (ship)


@runtime_checkable
class Preprocessor(Protocol):
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    safe_horizon_hours: int

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame: ...


class PreprocessorError(TrainingError):
    """An installed preprocessor failed or broke its contract (not retried: the same data
    fails the same way)."""

    reason = "PreprocessorError"
    retryable = False


@dataclass(frozen=True)
class Installed:
    name: str
    target: str  # "module:attribute", for messages
    preprocessor: Preprocessor | None
    problem: str | None  # why it cannot be used (it failed to load or is not a preprocessor)


def ship(points: Mapping[str, str]) -> None:
    """The preprocessors whose packages were shipped to this process rather than installed
    (Ray's runtime environment: server/execution/shipping.py), by their entry points (name ->
    "module:attribute"): found as if registered; an installed one of the same name wins."""
    _shipped.clear()
    _shipped.update(points)
    installed.cache_clear()


@functools.cache
def installed() -> Mapping[str, Installed]:
    """Every preprocessor registered in this environment (or shipped to it: ``ship``), by
    name (read once per process)."""
    out: dict[str, Installed] = {}
    points = list(importlib.metadata.entry_points(group=GROUP))
    registered = {ep.name for ep in points}
    points += [importlib.metadata.EntryPoint(name, value, GROUP) for name, value in _shipped.items() if name not in registered]
    for ep in points:
        try:
            loaded: Any = ep.load()
            instance = loaded() if isinstance(loaded, type) else loaded
        except Exception as exc:  # noqa: BLE001 - an operator's package: reported, never fatal
            out[ep.name] = Installed(ep.name, ep.value, None, f"failed to load ({type(exc).__name__})")
            continue
        if not isinstance(instance, Preprocessor):
            out[ep.name] = Installed(ep.name, ep.value, None, "is not a preprocessor (inputs, outputs, safe_horizon_hours, apply)")
            continue
        out[ep.name] = Installed(ep.name, ep.value, instance, None)
    return out


def get(name: str) -> Preprocessor:
    found = installed().get(name)
    if found is None or found.preprocessor is None:
        raise PreprocessorError(f"preprocessor {name!r} is not installed on this node", details={"preprocessor": name})
    return found.preprocessor


def apply(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Run preprocessor ``name`` on ``frame`` and check what it returned."""
    pre = get(name)
    try:
        out = pre.apply(frame.copy())
    except Exception as exc:
        raise PreprocessorError(
            f"preprocessor {name!r} failed: {type(exc).__name__}: {str(exc)[:200]}", details={"preprocessor": name}
        ) from exc
    if not isinstance(out, pd.DataFrame) or len(out) != len(frame):
        raise PreprocessorError(f"preprocessor {name!r} must return the frame with the same rows", details={"preprocessor": name})
    for column in pre.outputs:
        if column not in out.columns:
            raise PreprocessorError(f"preprocessor {name!r} did not add its output {column!r}", details={"preprocessor": name})
        values = pd.to_numeric(out[column], errors="coerce").astype("float64")
        out[column] = values.where(np.isfinite(values))
    return out
