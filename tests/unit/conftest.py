"""Fixtures of the unit tests."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture(autouse=True)
def _artifacts_under_tmp_path(tmp_path, monkeypatch):
    """FolderRegistry's temporary folders (and any other tempfile) go under pytest's
    tmp_path, which pytest cleans up, instead of piling up in /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
