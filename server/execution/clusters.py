"""The cluster registry: what the Ray cluster looks like now, recorded in PostgreSQL so
that every server lists the clusters all servers use."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from server.execution.executor import RayExecutor
from storage import clusters, db
from storage.records import RayCluster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterMonitor:
    engine: db.Engine
    executor: RayExecutor

    async def current(self) -> RayCluster:
        """This server's cluster as Ray reports it now (raises when Ray is unreachable)."""
        return await asyncio.to_thread(self.executor.cluster)

    async def refresh(self) -> list[RayCluster]:
        """Record the cluster's current view, then answer from the database (so clusters
        other servers use are listed too)."""
        try:
            cluster = await self.current()
        except Exception as exc:  # noqa: BLE001 - Ray down: show it as such
            log.warning("Ray unavailable: %s", exc)
            address = self.executor.address or "local"
            cluster = RayCluster(self.executor.cluster_id, address, "UNAVAILABLE", 0, {}, {}, ())
        async with db.transaction(self.engine) as conn:
            await clusters.upsert(conn, cluster)
            return await clusters.list_clusters(conn)
