"""Every benchmark, in turn: ``python -m bench [--smoke] [NAME ...]``.

``--smoke`` runs each with its module's ``SMOKE`` arguments (tiny sizes, seconds): what
``make test`` does (tests/e2e/test_benches.py), so that a benchmark that breaks fails CI
instead of going unseen. In smoke mode the benchmarks that start a stack share one
PostgreSQL and one local Ray (each gets a database of its own); those that need a process or
a cluster of their own (SUBPROCESS) run as ``python -m bench.NAME``. Without ``--smoke``
each runs as ``make bench`` always ran them: its own process, its own stack, full sizes.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

ALL = [
    "pipeline_overhead",
    "dispatch_latency",
    "api_latency",
    "queue_throughput",
    "auth_overhead",
    "stream_fairness",
    "import_memory",
    "rest_latency",
    "algorithms",
    "quality",
    "operations",
    "predictions",
    "tuning",
    "distributed",
    "scale",
    "forecast",
    "anomaly",
    "peers",
]
SUBPROCESS = {"import_memory", "distributed", "scale"}  # a server process of its own; a Ray cluster of its own
# ... unless the smoke run is already inside the private network namespace (make test): then
# distributed runs in this process on the shared Ray (the collectives' sockets stay in the namespace).
ON_SHARED_RAY = {"distributed": ["--running-ray"], "scale": ["--running-ray"]}


def _run_module(name: str, argv: list[str]) -> int:
    return subprocess.run([sys.executable, "-m", f"bench.{name}", *argv], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one shared stack: checks that every benchmark runs")
    ap.add_argument("names", nargs="*", choices=[[], *ALL], metavar="NAME", help=f"some of: {', '.join(ALL)} (default: all)")
    a = ap.parse_args(argv)
    names = a.names or ALL
    failed: list[str] = []
    if not a.smoke:
        failed = [name for name in names if _run_module(name, [])]
    else:
        from bench import _stack
        from server import isolation

        with _stack.shared():
            for name in names:
                module = importlib.import_module(f"bench.{name}")
                t0 = time.perf_counter()
                print(f"--- bench.{name} {' '.join(module.SMOKE)}", flush=True)
                shared_ray = name in ON_SHARED_RAY and isolation.isolated()
                if name in SUBPROCESS and not shared_ray:
                    ok = _run_module(name, module.SMOKE) == 0
                else:
                    run = getattr(module, "cli", None) or module.main
                    try:
                        run([*module.SMOKE, *(ON_SHARED_RAY[name] if shared_ray else [])])
                        ok = True
                    except Exception:  # noqa: BLE001 - reported, and the run fails at the end
                        import traceback

                        traceback.print_exc()
                        ok = False
                print(f"--- bench.{name}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - t0:.1f} s", flush=True)
                if not ok:
                    failed.append(name)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
