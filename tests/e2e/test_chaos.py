"""The short chaos suite (tests/chaos), as CI runs it: two replicas behind Envoy on a
PostgreSQL of its own, one replica killed with -9 twice during bursts of jobs, PostgreSQL
stopped mid-run and mid-stream, concurrent creates with one request_id; every check it
makes from the database must hold. ``make chaos`` runs the long version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(900)
def test_the_short_chaos_suite_passes():
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--short"], cwd=ROOT, capture_output=True, text=True, timeout=880, check=False
    )
    report = done.stdout[-6000:] + "\n" + done.stderr[-6000:]
    assert done.returncode == 0, report
    assert "chaos: PASSED" in done.stdout, report
    assert "chaos: 0 problem(s)" in done.stdout, report
