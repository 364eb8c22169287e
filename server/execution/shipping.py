"""What a Ray node needs of ours, shipped with the jobs: Ray's runtime environment.

A cluster run by someone else (KubeRay, a shared Ray cluster) has Ray and the libraries our
code imports, not this project. So the driver joins it with a job-level runtime environment
(``ray.init(runtime_env=...)``, inherited by every task and actor it starts: attempts,
search trials, training workers, model workers) whose ``py_modules`` are our packages and
every installed preprocessor's top-level package, and whose ``AIHUB_PREPROCESSORS`` names
each preprocessor's ``module:attribute`` (entry points are package metadata, which
``py_modules`` does not carry: each Ray process of ours hands them to
trainers.preprocessors with :func:`receive` when its runtime starts). Ray uploads each package once per content hash and every
node fetches it once.

When: ``AIHUB_SHIP_CODE`` = ``auto`` (the default) ships to a cluster at an address
(``RAY_ADDRESS``, or the local multi-node cluster) and not to the local single-node Ray,
whose workers run in this very environment; ``always``; ``never`` (the nodes' image has the
project installed).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from trainers import preprocessors

log = logging.getLogger(__name__)

ShipCode = Literal["auto", "always", "never"]
OURS = ("trainers", "server", "storage", "client")  # what a task, trial or worker may import of ours
EXCLUDES = ["__pycache__", "*.pyc", "*.pyo"]
ENTRY_POINTS = "AIHUB_PREPROCESSORS"  # JSON, name -> "module:attribute", for nodes without the metadata


def wanted(mode: ShipCode, address: str | None) -> bool:
    """Whether to ship: ``always``, or ``auto`` with Ray at an address."""
    return mode == "always" or (mode == "auto" and address is not None)


def _package_dir(module: str) -> Path | None:
    """The folder of top-level package ``module``, or None (a single-file module, a
    namespace package of several folders, a module of the standard library or unknown)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    locations = list(spec.submodule_search_locations)
    return Path(locations[0]) if len(locations) == 1 else None


def runtime_env() -> dict[str, Any]:
    """The job-level runtime environment that ships our packages and the preprocessors."""
    modules: dict[str, str] = {}
    for name in OURS:
        folder = _package_dir(name)
        if folder is None:
            raise RuntimeError(f"cannot ship package {name!r}: not found as a folder")
        modules[name] = str(folder)
    targets: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=preprocessors.GROUP):
        top = ep.value.split(":", 1)[0].split(".", 1)[0]
        folder = _package_dir(top)
        if folder is None:
            log.warning(
                "preprocessor %r (%s) is not a package folder and cannot be shipped: install it on every node that trains",
                ep.name,
                ep.value,
            )
            continue
        modules.setdefault(top, str(folder))
        targets[ep.name] = ep.value
    env: dict[str, Any] = {"py_modules": sorted(modules.values()), "excludes": EXCLUDES}
    if targets:
        env["env_vars"] = {ENTRY_POINTS: json.dumps(targets, sort_keys=True)}
    return env


def receive() -> None:
    """In a Ray process of ours (server/execution/runtime.py): the preprocessors the driver
    shipped (ENTRY_POINTS) become known to trainers.preprocessors."""
    raw = os.environ.get(ENTRY_POINTS)
    if not raw:
        return
    try:
        points = json.loads(raw)
    except ValueError:
        points = None
    if not isinstance(points, dict):
        log.warning("%s is not a JSON object of entry points; no preprocessor was shipped", ENTRY_POINTS)
        return
    preprocessors.ship({k: v for k, v in points.items() if isinstance(k, str) and isinstance(v, str)})
