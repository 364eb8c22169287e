"""Peak memory of the server during a large feature import, through gRPC and through REST.

Starts the server as `make run` does (`python -m server`, embedded PostgreSQL, local Ray;
Envoy for the REST run; not in a network namespace, so the server is one process), writes a
CSV of --mib MiB (series_id, timestamp, load, temperature), imports it with the client's
streaming ImportFeatureData (1 MiB chunks, the file never read whole on either side) and
with one REST POST (Envoy streams the body unbuffered; the transcoder turns each piece into
one message of the client-streaming ImportFeatureDataHttp), and samples the server's (and
Envoy's) RSS every 50 ms. Before the measured import, a 1 MiB import through the same path
warms the server (lazy imports, the first COPY, the first parse), so the growth printed is
what the file's size costs; the cold growth (from before the warm-up) is printed beside it.
Prints, for each, the RSS before, the peak, the growth as a multiple of the file, rows and
seconds.

    python -m bench.import_memory [--mib 60] [--via grpc|rest|both]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

from client import TrainingClient

ROOT = Path(__file__).resolve().parent.parent


def write_csv(path: Path, mib: int) -> int:
    """Hourly rows of many series until the file holds ``mib`` MiB; returns the rows."""
    rows, hours = 0, 8760
    start = np.datetime64("2024-01-01T00:00")
    stamps = np.datetime_as_string(start + np.arange(hours).astype("timedelta64[h]"), unit="s")
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        f.write("series_id,timestamp,load,temperature\n")
        series = 0
        while f.tell() < mib * 1024**2:
            load = rng.normal(100, 10, hours).round(3)
            temp = rng.normal(15, 5, hours).round(2)
            f.writelines(f"m{series},{t},{l_},{t_}\n" for t, l_, t_ in zip(stamps, load, temp, strict=True))
            rows += hours
            series += 1
    return rows


def _import(via: str, port: int, http: int, table: str, data: Path) -> int:
    """Import ``data`` into ``table`` through ``via``; the rows imported."""
    if via == "rest":
        with data.open("rb") as body:
            resp = requests.post(
                f"http://127.0.0.1:{http}/ai/training/features/{table}?tenant_id=bench",
                data=body,
                headers={"Content-Type": "text/csv"},
                timeout=3600,
            )
        resp.raise_for_status()
        return int(resp.json()["rows_imported"])
    with TrainingClient(f"127.0.0.1:{port}", timeout=3600) as c:
        return c.import_data("bench", table, data).rows_imported


def measure(via: str, data: Path, warm: Path, tmp: Path) -> tuple[int, int, int, int, float, int]:
    """Import ``warm`` then ``data`` through ``via`` (grpc: the client's streaming import;
    rest: one POST through Envoy) into a fresh server; (RSS before the warm-up, RSS before
    the measured import, its peak, Envoy's peak, seconds, rows)."""
    port, http = 50000 + os.getpid() % 5000, 55000 + os.getpid() % 5000
    env = {
        **os.environ,
        "AIHUB_DATA_DIR": str(tmp / f"data-{via}"),
        "AIHUB_GRPC_PORT": str(port),
        "AIHUB_HTTP_PORT": str(http),
        "AIHUB_METRICS_PORT": "0",
        "AIHUB_REST": "true" if via == "rest" else "false",
        "AIHUB_AUTH": "off",
        "AIHUB_ISOLATE": "false",  # one server process to measure (Envoy, when on, is its child)
    }
    env.pop("DATABASE_URL", None)
    log_path = tmp / f"server-{via}.log"
    log = log_path.open("w")
    server = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while "Ctrl-C to stop" not in log_path.read_text():
            if server.poll() is not None:
                raise SystemExit(log_path.read_text()[-2000:])
            time.sleep(0.5)
        proc = psutil.Process(server.pid)
        envoy = next((p for p in proc.children(recursive=True) if p.name() == "envoy"), None)
        cold = proc.memory_info().rss
        _import(via, port, http, "warm_import", warm)
        before = proc.memory_info().rss
        peak, envoy_peak = [before], [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    if envoy is not None:
                        envoy_peak[0] = max(envoy_peak[0], envoy.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        rows = _import(via, port, http, "big_import", data)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(60)
    return cold, before, peak[0], envoy_peak[0], seconds, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=60)
    parser.add_argument("--via", choices=["grpc", "rest", "both"], default="both")
    args = parser.parse_args(argv)
    mib = 1024**2
    with tempfile.TemporaryDirectory(prefix="aihub-import-") as tmp:
        data, warm = Path(tmp) / "big.csv", Path(tmp) / "warm.csv"
        written = write_csv(data, args.mib)
        write_csv(warm, 1)
        size = data.stat().st_size
        print(f"file: {size / mib:.0f} MiB, {written:,} rows")
        for via in ("grpc", "rest") if args.via == "both" else (args.via,):
            cold, before, peak, envoy_peak, seconds, rows = measure(via, data, warm, Path(tmp))
            rate = size / mib / seconds
            envoy_text = f"; Envoy's peak {envoy_peak / mib:.0f} MiB" if envoy_peak else ""
            print(
                f"{via}: imported {rows:,} rows in {seconds:.1f} s ({rate:.1f} MiB/s, {rows / seconds:,.0f} rows/s); "
                f"server RSS before {before / mib:.0f} MiB, "
                f"peak {peak / mib:.0f} MiB, growth {(peak - before) / mib:.0f} MiB = {(peak - before) / size:.2f} x the file "
                f"(cold, with the warm-up's: {(peak - cold) / mib:.0f} MiB = {(peak - cold) / size:.2f} x){envoy_text}"
            )


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--mib", "2"]

if __name__ == "__main__":
    main()
