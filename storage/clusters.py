"""The Ray clusters and worker nodes the service has seen."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import json_value
from storage.records import RayCluster, WorkerNode


async def upsert(conn: AsyncConnection, cluster: RayCluster) -> None:
    """Record the cluster's current view; nodes no longer reported are marked DEAD."""
    await conn.execute(
        sa.text(
            """
            INSERT INTO ray_clusters (cluster_id, address, status, num_workers, resources, available_resources, updated_at)
            VALUES (:id, :address, :status, :n, CAST(:res AS jsonb), CAST(:avail AS jsonb), clock_timestamp())
            ON CONFLICT (cluster_id) DO UPDATE SET address = EXCLUDED.address, status = EXCLUDED.status,
                num_workers = EXCLUDED.num_workers, resources = EXCLUDED.resources,
                available_resources = EXCLUDED.available_resources, updated_at = EXCLUDED.updated_at
            """
        ),
        {
            "id": cluster.cluster_id,
            "address": cluster.address,
            "status": cluster.status,
            "n": cluster.num_workers,
            "res": json.dumps(dict(cluster.resources)),
            "avail": json.dumps(dict(cluster.available_resources)),
        },
    )
    await conn.execute(
        sa.text(
            "UPDATE worker_nodes SET status = 'DEAD', updated_at = clock_timestamp() WHERE cluster_id = :id AND NOT node_id = ANY(:seen)"
        ),
        {"id": cluster.cluster_id, "seen": [n.node_id for n in cluster.nodes]},
    )
    for node in cluster.nodes:
        await conn.execute(
            sa.text(
                """
                INSERT INTO worker_nodes (node_id, cluster_id, address, status, resources, updated_at)
                VALUES (:node_id, :cluster_id, :address, :status, CAST(:res AS jsonb), clock_timestamp())
                ON CONFLICT (node_id) DO UPDATE SET cluster_id = EXCLUDED.cluster_id, address = EXCLUDED.address,
                    status = EXCLUDED.status, resources = EXCLUDED.resources, updated_at = EXCLUDED.updated_at
                """
            ),
            {
                "node_id": node.node_id,
                "cluster_id": cluster.cluster_id,
                "address": node.address,
                "status": node.status,
                "res": json.dumps(dict(node.resources)),
            },
        )


async def list_clusters(conn: AsyncConnection) -> list[RayCluster]:
    clusters = (await conn.execute(sa.text("SELECT * FROM ray_clusters ORDER BY cluster_id"))).mappings().all()
    nodes = (await conn.execute(sa.text("SELECT * FROM worker_nodes ORDER BY node_id"))).mappings().all()
    out = []
    for c in clusters:
        mine = tuple(
            WorkerNode(n["node_id"], n["address"], n["status"], json_value(n["resources"]))
            for n in nodes
            if n["cluster_id"] == c["cluster_id"]
        )
        out.append(
            RayCluster(
                c["cluster_id"],
                c["address"],
                c["status"],
                c["num_workers"],
                json_value(c["resources"]),
                json_value(c["available_resources"]),
                mine,
                c["updated_at"],
            )
        )
    return out
