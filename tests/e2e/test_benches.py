"""Every benchmark in bench/ runs (`python -m bench --smoke`: tiny sizes, one shared stack),
so that a benchmark that breaks fails the suite instead of going unseen, as
bench/pipeline_overhead did when per-tenant schemas replaced the shared one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.__main__ import ALL
from tests.conftest import ROOT


@pytest.mark.timeout(900)
def test_every_benchmark_runs_in_its_smoke_mode(tmp_path):
    log = tmp_path / "bench.log"
    with log.open("w") as out:
        command = [sys.executable, "-m", "bench", "--smoke"]
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=850, check=False)
    text = log.read_text()
    assert done.returncode == 0, text[-6000:]
    for name in ALL:
        assert f"--- bench.{name}: ok" in text, (name, text[-3000:])
    # Each printed its figures, not only its name.
    assert "ratio job / plain" in text and "Envoy adds at the median" in text and "claim+complete/s" in text
    assert "by alias via REST, warm" in text and "plain script (read, pandas features, LightGBM predict)" in text
    assert "plain IsolationForest, value alone, contamination = label rate" in text
    assert "B's streams open" in text and "rest: imported" in text
