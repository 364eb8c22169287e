"""The cluster registry: what the Ray cluster looks like now, recorded in PostgreSQL so
that every server lists the clusters all servers use."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from server.execution.executor import Executor
from storage import clusters, db
from storage.records import RayCluster
from trainers.errors import ResourceError
from trainers.spec import WorkerRequest

log = logging.getLogger(__name__)


def shortage(request: WorkerRequest, cluster: RayCluster) -> ResourceError | None:
    """ResourceError when ``request`` can never run on ``cluster`` (its alive nodes' total
    resources, whatever runs now), naming the resource that is short; None when it fits."""
    nodes = [n.resources for n in cluster.nodes if n.status == "ALIVE"]
    wanted = {"CPU": request.cpus, "memory": float(request.memory), "GPU": request.gpus}
    wanted = {k: v for k, v in wanted.items() if v > 0}

    def holds(resources: dict[str, float], kinds: tuple[str, ...]) -> int:
        """How many such workers one node holds, counting only ``kinds``."""
        return min((math.floor(resources.get(k, 0.0) / wanted[k] + 1e-9) for k in kinds), default=0)

    available = sum(holds(dict(r), tuple(wanted)) for r in nodes)
    if available >= request.workers:
        return None
    short = next((k for k in wanted if sum(holds(dict(r), (k,)) for r in nodes) < request.workers), " and ".join(wanted))
    if available == 0 and nodes:
        why = f"a single worker ({request.describe().split(' x ')[1]}) is bigger than any node"
    else:
        why = f"the whole cluster holds {available} workers of that size ({short} is short)"
    total = sum(r.get(short, 0.0) for r in nodes) if short in wanted else None
    details = {"requested_workers": str(request.workers), "available_workers": str(available), "resource": short}
    if total is not None:
        details |= {"requested": f"{request.workers * wanted[short]:g}", "available": f"{total:g}"}
    return ResourceError(f"Insufficient resources for distributed training: {request.describe()}; {why}", details=details)


@dataclass(frozen=True)
class ClusterMonitor:
    engine: db.Engine
    executor: Executor

    async def current(self) -> RayCluster:
        """This server's cluster as Ray reports it now (raises when Ray is unreachable)."""
        return await asyncio.to_thread(self.executor.cluster)

    async def check_fits(self, request: WorkerRequest | None) -> None:
        """Raise ResourceError when a distributed request can never fit this cluster. Ray
        unreachable: no verdict (the job waits in the queue like any other)."""
        if request is None:
            return
        try:
            cluster = await self.current()
        except Exception as exc:  # noqa: BLE001 - Ray down: decide when it is back
            log.warning("Ray unavailable; resources not checked: %s", exc)
            return
        if (error := shortage(request, cluster)) is not None:
            raise error

    async def watch(self, interval: float) -> None:
        """Record the cluster's view every ``interval`` seconds, until cancelled: the
        registry's ``updated_at`` is its last heartbeat, its nodes' status and resources
        stay current without anyone listing them."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the database may be down too; try again next time
                log.warning("cluster registry not refreshed: %s", exc)

    async def refresh(self) -> list[RayCluster]:
        """Record the cluster's current view, then answer from the database (so clusters
        other servers use are listed too)."""
        try:
            cluster = await self.current()
        except Exception as exc:  # noqa: BLE001 - Ray down: show it as such
            log.warning("Ray unavailable: %s", exc)
            address = self.executor.address or "local"
            cluster = RayCluster(self.executor.cluster_id, address, "DOWN", 0, {}, {}, ())
        async with db.transaction(self.engine) as conn:
            await clusters.upsert(conn, cluster)
            return await clusters.list_clusters(conn)
