"""In-memory stand-ins for the pipeline's ports, to run a training in-process on a
DataFrame: notebooks, tests, benchmarks and hardware checks. The service uses the
PostgreSQL-backed ones in server/execution/adapters.py."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trainers.ports import Level


class FrameSource:
    """A DataSource over one DataFrame (a ``timestamp`` column and value columns)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def load(self, table: str, columns: Sequence[str], start: datetime, end: datetime, series: Sequence[str] | None = None) -> pd.DataFrame:
        keep = (self.frame["timestamp"] >= start) & (self.frame["timestamp"] <= end)
        if series is not None:
            keep &= self.frame["series_id"].isin(list(series))
        extra = [c for c in ("series_id",) if c in self.frame.columns]
        return self.frame.loc[keep, ["timestamp", *extra, *columns]].reset_index(drop=True)

    def outline(self, table: str, start: datetime, end: datetime) -> list[tuple[str, int, datetime, datetime]]:
        """Per series: (series_id, rows, first and last timestamp) in start..end."""
        rows = self.load(table, [], start, end)
        if "series_id" not in rows.columns:
            rows = rows.assign(series_id="")
        by = rows.groupby(rows["series_id"].astype(str))["timestamp"]
        return [(str(k), int(n), a, b) for k, n, a, b in zip(by.size().index, by.size(), by.min(), by.max(), strict=True)]


class MemoryReporter:
    """A Reporter that keeps what it is told: ``lines`` holds (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.steps: list[str] = []
        self.values: dict[str, float] = {}
        self.writes: list[dict[str, float]] = []  # every metrics call, in order

    def step(self, name: str, progress: int) -> None:
        self.steps.append(name)

    def progress(self, progress: int) -> None:
        pass

    def log(self, level: Level, message: str) -> None:
        self.lines.append((level, message))

    def metrics(self, values: Mapping[str, float], *, final: bool = False) -> None:
        self.writes.append(dict(values))
        if final:
            self.values = {}
        self.values.update(values)


class FolderRegistry:
    """A ModelRegistry that saves under a folder (a temporary one by default) and numbers
    versions 1, 2, 3, ...; ``registered`` keeps what each registration said."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="aihub-local-models-"))
        self.registered: list[dict[str, Any]] = []

    def artifact_dir(self) -> Path:
        folder = self.root / f"v{len(self.registered) + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def register(self, artifact: Path, spec: Any, metrics: Mapping[str, float], importance: Mapping[str, float]) -> int:
        self.registered.append({"artifact": artifact, "metrics": dict(metrics), "importance": dict(importance)})
        return len(self.registered)
