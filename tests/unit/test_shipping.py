"""What goes to the Ray nodes with the jobs (server/execution/shipping.py), and how a node
without the preprocessors' metadata finds them (shipping.receive, trainers.preprocessors.ship).
Through a real node without our package: tests/cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.execution import shipping
from trainers import preprocessors

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("mode", "address", "ships"),
    [("auto", "head:6379", True), ("auto", None, False), ("always", None, True), ("never", "head:6379", False)],
)
def test_when_code_is_shipped(mode, address, ships):
    assert shipping.wanted(mode, address) is ships


def test_the_runtime_environment_holds_our_packages_and_the_preprocessors():
    env = shipping.runtime_env()
    folders = {Path(p) for p in env["py_modules"]}
    assert {ROOT / name for name in shipping.OURS} <= folders
    assert ROOT / "tests" / "plugins" / "aihub_test_preprocessors" in folders
    assert "__pycache__" in env["excludes"]
    points = json.loads(env["env_vars"][shipping.ENTRY_POINTS])
    assert points["load_times_temperature"] == "aihub_test_preprocessors:LoadTimesTemperature"


@pytest.fixture
def fresh_registry():
    preprocessors.ship({})
    yield
    preprocessors.ship({})


def test_a_shipped_entry_point_is_found_where_none_is_installed(monkeypatch, fresh_registry):
    shipped = {"shipped_here": "aihub_test_preprocessors:LoadTimesTemperature", "load_times_temperature": "nowhere:Nothing"}
    monkeypatch.setenv(shipping.ENTRY_POINTS, json.dumps(shipped))
    shipping.receive()
    found = preprocessors.installed()
    assert found["shipped_here"].preprocessor is not None
    assert found["load_times_temperature"].target == "aihub_test_preprocessors:LoadTimesTemperature"  # the installed one wins


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '{"x": 3}'])
def test_a_malformed_shipped_list_adds_nothing(monkeypatch, fresh_registry, value):
    monkeypatch.setenv(shipping.ENTRY_POINTS, value)
    shipping.receive()
    assert set(preprocessors.installed()) == {"load_times_temperature", "always_fails"}
