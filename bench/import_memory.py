"""Peak memory of the server during a large feature import, streamed through gRPC.

Starts the server as `make run` does (`python -m server`, embedded PostgreSQL, local Ray;
no Envoy), writes a CSV of --mib MiB (series_id, timestamp, load, temperature), imports it
with the client's streaming ImportFeatureData (1 MiB chunks, the file never read whole on
either side), and samples the server process's RSS every 50 ms. Prints the RSS before, the
peak, the peak's growth as a fraction of the file, rows and seconds.

    python -m bench.import_memory [--mib 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aihub-import-") as tmp:
        data = Path(tmp) / "big.csv"
        rows = write_csv(data, args.mib)
        size = data.stat().st_size
        port = 50000 + os.getpid() % 10000
        env = {
            **os.environ,
            "AIHUB_DATA_DIR": str(Path(tmp) / "data"),
            "AIHUB_GRPC_PORT": str(port),
            "AIHUB_METRICS_PORT": "0",
            "AIHUB_REST": "false",
            "AIHUB_AUTH": "off",
        }
        env.pop("DATABASE_URL", None)
        log = (Path(tmp) / "server.log").open("w")
        server = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while "Ctrl-C to stop" not in (Path(tmp) / "server.log").read_text():
                if server.poll() is not None:
                    raise SystemExit((Path(tmp) / "server.log").read_text()[-2000:])
                time.sleep(0.5)
            proc = psutil.Process(server.pid)
            before = proc.memory_info().rss
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            with TrainingClient(f"127.0.0.1:{port}", timeout=3600) as c:
                resp = c.import_data("bench", "big_import", data)
            seconds = time.perf_counter() - t0
            done.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(60)
    mib = 1024**2
    rate = size / mib / seconds
    print(f"file: {size / mib:.0f} MiB, {rows:,} rows; imported {resp.rows_imported:,} rows in {seconds:.0f} s ({rate:.1f} MiB/s)")
    print(f"server RSS: before {before / mib:.0f} MiB, peak {peak[0] / mib:.0f} MiB, growth {(peak[0] - before) / mib:.0f} MiB")
    print(f"growth / file size: {(peak[0] - before) / size:.2f} (the growth is one chunk's rows at work, so it stays flat as files grow)")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--mib", "2"]

if __name__ == "__main__":
    main()
