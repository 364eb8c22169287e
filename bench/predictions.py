"""The cost of keeping predictions for looking (issue 13), in one run on this machine:

1. the quick-start pipeline (in process, trainers.local ports) with predictions.parquet
   written vs not written: the ratio of wall times (median of alternating runs);
2. the artifact at its bound (MAX_ROWS rows): write time vs pyarrow's own write of the same
   table, file size, read + thin to a plot's 2,000 points, and what GetPredictions builds
   for a 5,000-point page and a 2,000-point plot (protobuf and its JSON size).

    python -m bench.predictions [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import json_format

from bench._stack import QUICK_START
from server import demo_data
from server.api import convert
from storage import records
from trainers import pipeline, predictions, spec
from trainers.local import FolderRegistry, FrameSource, MemoryReporter


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pipeline_ratio(repeats: int) -> None:
    frame = demo_data.generate("2023-12-01 00:00", "2024-12-31 23:00")
    s = spec.build(QUICK_START)
    real_write = predictions.write
    walls: dict[str, list[float]] = {"with": [], "without": []}

    def once() -> None:
        with tempfile.TemporaryDirectory(prefix="aihub-bench-") as root:  # no model folders left behind
            pipeline.run(s, data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(Path(root)))

    once()  # imports, first fit
    for _ in range(repeats):
        for mode in ("with", "without"):
            predictions.write = real_write if mode == "with" else (lambda kept, folder: folder / predictions.FILE_NAME)
            t0 = time.perf_counter()
            once()
            walls[mode].append(time.perf_counter() - t0)
    predictions.write = real_write
    w, wo = statistics.median(walls["with"]), statistics.median(walls["without"])
    print(f"quick-start pipeline: {w * 1000:.0f} ms with predictions kept, {wo * 1000:.0f} ms without: ratio {w / wo:.3f}")


def at_the_bound(repeats: int) -> None:
    n = predictions.MAX_ROWS
    rng = np.random.default_rng(1)
    actual = 100 + 20 * np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(size=n)
    stamps = pd.Series(pd.date_range("2014-01-01", periods=n, freq="h"))
    kept = predictions.build(stamps, actual, kind="forecast", predicted=actual + rng.normal(size=n), baselines={"24h": np.roll(actual, 24)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = timed(lambda: predictions.write(kept, folder), repeats)
        table = pa.Table.from_pandas(kept.frame, preserve_index=False)
        raw = timed(lambda: pq.write_table(table, folder / "raw.parquet", compression="zstd"), repeats)
        size = (folder / predictions.FILE_NAME).stat().st_size
        read = timed(lambda: predictions.read(folder / predictions.FILE_NAME), repeats)
        back = predictions.read(folder / predictions.FILE_NAME)
    thin = timed(lambda: predictions.downsample(back.frame, 2000), repeats)
    print(f"{n} rows: write {ours * 1000:.1f} ms (pyarrow alone {raw * 1000:.1f} ms: ratio {ours / raw:.2f}), {size / 1e6:.2f} MB")
    print(f"{n} rows: read {read * 1000:.1f} ms, thin to 2,000 points {thin * 1000:.1f} ms")
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    version = records.ModelVersion(
        model_id=uuid.uuid4(), tenant_id="bench", model_type="forecast", version=1, job_id=job_id, algorithm="lgbm",
        artifact_uri="", features=(), target="load", training_start=now, training_end=now, metrics={},
        feature_importance={}, config={}, config_hash="", created_at=now, deleted_at=None,
    )  # fmt: skip
    for label, page in (("a 5,000-point page", back.frame.iloc[:5000]), ("a 2,000-point plot", predictions.downsample(back.frame, 2000))):
        build = timed(lambda page=page: convert.predictions_to_pb(job_id, version, back, page, downsampled=False, next_offset=0), repeats)
        msg = convert.predictions_to_pb(job_id, version, back, page, downsampled=False, next_offset=0)
        text = json_format.MessageToJson(msg, preserving_proto_field_name=True)
        sizes = f"{msg.ByteSize() / 1e3:.0f} kB protobuf, {len(text) / 1e3:.0f} kB JSON"
        print(f"GetPredictions, {label}: {build * 1000:.1f} ms to build, {sizes}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    pipeline_ratio(a.repeats)
    at_the_bound(a.repeats)


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--repeats", "1"]

if __name__ == "__main__":
    main()
