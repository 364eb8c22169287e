"""A file whose clock steps back (timestamps repeated), imported with each duplicates rule,
through the real stack (REST through Envoy, gRPC, PostgreSQL), and across chunks of one
import (storage.features.FileImport on real PostgreSQL)."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
import requests

from client import ConfigValidationError
from storage import db, features
from storage.errors import InvalidFeatureData
from storage.tenancy import Scope

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = "acme-corp"


def stepping_back() -> str:
    """36 hourly readings; the clock steps back an hour after 12:00, so 12 hours repeat."""
    hours = [*range(24), *range(12, 24)]
    lines = [f"2024-05-01T{h:02d}:00:00,{h * 10 + (1000 if i >= 24 else 0)}" for i, h in enumerate(hours)]
    return "timestamp,value\n" + "\n".join(lines) + "\n"


async def stored(app, table: str) -> pd.Series:
    async with db.transaction(app.engine, Scope.of(T)) as conn:
        frame = await features.read_frame(
            conn, table, ["value"], pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-02", tz="UTC")
        )
    return frame.set_index("timestamp")["value"]


async def test_each_rule_over_rest_and_grpc(app, client, rest):
    post = lambda table, **params: requests.post(  # noqa: E731
        f"{rest}/ai/training/features/{table}", params={"tenant_id": T, **params}, data=stepping_back(),
        headers={"Content-Type": "text/csv"}, timeout=30,
    )  # fmt: skip
    r = await asyncio.to_thread(post, "sensor")
    assert r.status_code == 400 and r.json()["details"]["field"] == "timestamp", r.text
    assert "2024-05-01 12:00:00+00:00 appears twice" in r.json()["message"] and "duplicates=first" in r.json()["message"]
    r = await asyncio.to_thread(post, "sensor", duplicates="sideways")
    assert r.status_code == 400 and r.json()["details"]["field"] == "duplicates"
    for rule, expected_noon in (("first", 120.0), ("last", 1120.0), ("mean", 620.0)):
        r = await asyncio.to_thread(post, f"sensor_{rule}", duplicates=rule)
        assert r.status_code == 200, r.text
        assert r.json()["rows_imported"] == 24 and r.json()["duplicates_merged"] == 12 and r.json()["duplicates"] == rule
        values = await stored(app, f"sensor_{rule}")
        assert len(values) == 24 and values[pd.Timestamp("2024-05-01T12:00", tz="UTC")] == expected_noon
        assert values[pd.Timestamp("2024-05-01T03:00", tz="UTC")] == 30.0  # a hour that did not repeat
    done = await client.import_data(T, "sensor_grpc", stepping_back().encode(), duplicates="last")
    assert done.rows_imported == 24 and done.duplicates_merged == 12
    with pytest.raises(ConfigValidationError) as err:
        await client.import_data(T, "sensor_grpc2", stepping_back().encode())
    assert err.value.violations[0][0] == "timestamp"


async def test_the_rule_holds_across_the_chunks_of_one_import(app):
    first = pd.DataFrame({"timestamp": pd.date_range("2024-05-01", periods=3, freq="h", tz="UTC"), "value": [1.0, 2.0, 3.0]})
    again = pd.DataFrame({"timestamp": pd.date_range("2024-05-01 02:00", periods=2, freq="h", tz="UTC"), "value": [30.0, 40.0]})
    async with db.transaction(app.engine, Scope.of(T)) as conn:
        load = features.FileImport(conn, "chunked_refused")
        await load.add(first)
        await load.add(again)
        with pytest.raises(InvalidFeatureData, match="02:00:00\\+00:00 appears twice"):
            await load.finish()
    # Into a table that has rows (an upsert, not a plain insert), the same refusal, and the
    # refused import writes nothing.
    async with db.transaction(app.engine, Scope.of(T)) as conn:
        await features.import_frame(conn, "chunked_refused", first)
    async with db.transaction(app.engine, Scope.of(T)) as conn:
        load = features.FileImport(conn, "chunked_refused")
        await load.add(first.assign(value=[7.0, 8.0, 9.0]))
        await load.add(again)
        with pytest.raises(InvalidFeatureData, match="02:00:00\\+00:00 appears twice"):
            await load.finish()
    assert (await stored(app, "chunked_refused")).tolist() == [1.0, 2.0, 3.0]
    for rule, at_two in (("first", 3.0), ("last", 30.0), ("mean", 16.5)):
        async with db.transaction(app.engine, Scope.of(T)) as conn:
            load = features.FileImport(conn, f"chunked_{rule}", rule)
            await load.add(first)
            await load.add(again)
            done = await load.finish()
        assert (done.rows, done.duplicates) == (4, 1), rule
        values = await stored(app, f"chunked_{rule}")
        assert values.tolist() == [1.0, 2.0, at_two, 40.0], rule
