"""Feature tables are indexed for shard reads (issue 28): a worker reading its own shard (some
series, or a time range with a look-back margin) is planned on the table's primary key
(tenant_id, series_id, timestamp), not a scan of the whole table, whatever its size."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from storage import db, features
from storage.tenancy import Scope

T = "acme-corp"


async def test_shard_reads_use_the_primary_key(database_url):
    stamps = pd.date_range("2024-01-01", periods=24 * 30, freq="h", tz="UTC")
    frame = pd.concat(
        pd.DataFrame({"timestamp": stamps, "series_id": f"feeder-{s:03d}", "load": np.arange(len(stamps), dtype=float)}) for s in range(60)
    )
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with db.transaction(engine, Scope.of(T)) as conn:
            await features.import_frame(conn, "many_series", frame)
        async with db.transaction(engine, Scope.of(T)) as conn:
            await conn.raw.execute(f"ANALYZE {features.table_name(T, 'many_series')}")
            start, end = datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 1, 12, tzinfo=UTC)
            for what, series in (("by series", ["feeder-007", "feeder-031"]), ("by time range", None)):
                query, args = features.read_query(T, "many_series", ["load"], start, end, series)
                plan = [row[0] for row in await conn.raw.fetch("EXPLAIN " + query, *args)]
                assert any("many_series_pkey" in line for line in plan), (what, "\n".join(plan))
                assert not any("Seq Scan" in line for line in plan), (what, "\n".join(plan))
            shard = await features.read_frame(conn, "many_series", ["load"], start, end, ["feeder-007"])
            # What a distributed job cuts its shards by: counted in the database, on the same key.
            query, *args = features.outline_query(T, "many_series", start, end)
            plan = [row[0] for row in await conn.raw.fetch("EXPLAIN " + query, *args)]
            assert any("many_series_pkey" in line for line in plan) and not any("Seq Scan" in line for line in plan), "\n".join(plan)
            outline = await features.outline(conn, "many_series", start, end)
        assert len(shard) == 49 and set(shard["series_id"]) == {"feeder-007"}
        assert len(outline) == 60 and outline[7] == ("feeder-007", 49, start, end)
    finally:
        await engine.dispose()
