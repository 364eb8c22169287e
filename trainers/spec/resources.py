"""What a distributed job asks of the cluster: the guide's ``ray_config`` read strictly.

``memory_per_worker`` is a number and a unit, such as "4GB" or "512MB"; KB/MB/GB/TB count in
powers of 1024, as the guide's examples mean them (KiB/MiB/GiB/TiB are accepted as the same);
a bare number, another unit or a lower-case unit is refused rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ValidationError

from trainers import algorithms
from trainers.errors import shown
from trainers.spec.fields import Checked, Flag, Number, Section, Whole

MAX_WORKERS = 1024
MAX_CPUS_PER_WORKER = 1024
DEFAULT_WORKERS = 2
DEFAULT_CPUS_PER_WORKER = 1.0
_CPUS_REASON = f"must be a number greater than 0 and at most {MAX_CPUS_PER_WORKER}"
_MEMORY = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_UNITS |= {"KiB": _UNITS["KB"], "MiB": _UNITS["MB"], "GiB": _UNITS["GB"], "TiB": _UNITS["TB"]}


def parse_memory(value: Any) -> int:
    """Bytes of a memory size such as "4GB" or "512MB" (ValueError naming the form otherwise)."""
    match = _MEMORY.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{shown(value)} is not a memory size such as "4GB" or "512MB" (units B, KB, MB, GB, TB)')
    size = int(float(match["n"]) * _UNITS[match["unit"]])
    if size <= 0:
        raise ValueError(f"{shown(value)} is not a memory size: it must be more than 0 bytes")
    return size


@dataclass(frozen=True)
class WorkerRequest:
    """``workers`` Ray workers of ``cpus`` CPUs, ``memory`` bytes (0: not stated) and
    ``gpus`` GPUs each."""

    workers: int
    cpus: float
    memory: int
    gpus: float

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.memory:
            parts.append(f"{self.memory / 1024**3:g} GiB")
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        return f"{self.workers} workers x ({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """The canonical ``ray_config``: every field written in, memory in the largest unit
        that states it exactly ("4GB", "1536MB")."""
        out: dict[str, Any] = {"num_workers": self.workers, "cpus_per_worker": self.cpus}
        if self.memory:
            out["memory_per_worker"] = format_memory(self.memory)
        out["use_gpu"] = bool(self.gpus)
        return out


def format_memory(size: int) -> str:
    for unit in ("TB", "GB", "MB", "KB"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


def _memory_size(value: Any) -> str:
    parse_memory(value)  # ValueError naming the form
    return str(value)


class RayConfig(Section):
    """The guide's ``ray_config``: what a distributed job asks of each worker (``use_gpu``
    also for a single-node mlp/lstm)."""

    num_workers: Annotated[int | None, Whole(1, MAX_WORKERS, nullable=True)] = None
    cpus_per_worker: Annotated[float | None, Number(_CPUS_REASON, above=0, high=MAX_CPUS_PER_WORKER, nullable=True)] = None
    memory_per_worker: Annotated[str | None, Checked(_memory_size, nullable=True)] = None
    use_gpu: Annotated[bool, Flag] = False

    def request(self, algorithm: str) -> WorkerRequest:
        """What the workers ask of the cluster, the guide's defaults written in."""
        return WorkerRequest(
            workers=self.num_workers or DEFAULT_WORKERS,
            cpus=float(self.cpus_per_worker or DEFAULT_CPUS_PER_WORKER),
            memory=parse_memory(self.memory_per_worker) if self.memory_per_worker is not None else 0,
            gpus=1.0 if self.use_gpu and _trains_on_gpu(algorithm) else 0.0,
        )


def _trains_on_gpu(name: Any) -> bool:
    """Whether the algorithm uses a GPU (else use_gpu reserves none: it trains on the CPU,
    and its log says so)."""
    return isinstance(name, str) and name in algorithms.REGISTRY and algorithms.get(name).supports_gpu


def worker_request(config: Mapping[str, Any]) -> WorkerRequest | None:
    """What a distributed config asks of the cluster; None for a single-node config or a
    ``ray_config`` that is malformed (its violations say why)."""
    if config.get("distributed") is not True:
        return None
    try:
        ray_config = RayConfig.model_validate(config.get("ray_config") or {})
    except ValidationError:
        return None
    return ray_config.request(str(config.get("algorithm") or ""))
