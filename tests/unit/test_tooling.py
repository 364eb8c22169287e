"""The generated stubs are current, buf lint is clean, the client's surface is pinned."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import client
from tests.conftest import ROOT

BUF = Path(sys.executable).parent / "buf"


def test_stubs_match_protos(tmp_path):
    out = tmp_path / "_gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(out)], check=True, capture_output=True)
    committed = ROOT / "client" / "_gen"
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    stale = [str(p) for p in fresh if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not stale, f"client/_gen is stale: run `make protos` ({stale})"


def test_buf_lint_is_clean():
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--link-only"], check=True)
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_public_surface():
    assert sorted(client.__all__) == [
        "AIHubError",
        "AsyncTrainingClient",
        "ConfigValidationError",
        "DataLoadError",
        "InvalidStateError",
        "NotFoundError",
        "ResourceError",
        "TrainingClient",
        "UnavailableError",
        "pb",
        "pb_grpc",
    ]


def test_layers_do_not_cross():
    """trainers/ and storage/ import nothing of ours (storage) or only themselves (trainers);
    no protobuf outside client/ and server/."""
    for package, forbidden in [
        ("trainers", ("from server", "import server", "from storage", "from client", "google.protobuf", "import grpc")),
        ("storage", ("from server", "from trainers", "from client", "google.protobuf", "import grpc")),
    ]:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            hits = [f for f in forbidden if f in text]
            assert not hits, f"{path.relative_to(ROOT)} crosses a layer: {hits}"
