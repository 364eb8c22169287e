"""The Ray clusters and their nodes the service has seen. Every statement is named here
with what it does and the index that serves it."""

from __future__ import annotations

import json

from storage import db
from storage.records import RayCluster, WorkerNode

# upsert_cluster: a cluster's current view. Index: ray_clusters primary key.
UPSERT_CLUSTER = db.sql(
    """
    INSERT INTO ray_clusters (cluster_id, address, status, num_workers, resources, available_resources, updated_at)
    VALUES (:id, :address, :status, :n, CAST(:res AS jsonb), CAST(:avail AS jsonb), clock_timestamp())
    ON CONFLICT (cluster_id) DO UPDATE SET address = EXCLUDED.address, status = EXCLUDED.status,
        num_workers = EXCLUDED.num_workers, resources = EXCLUDED.resources,
        available_resources = EXCLUDED.available_resources, updated_at = EXCLUDED.updated_at
    """
)

# mark_missing_nodes_dead: a cluster's nodes it no longer reports.
# Index: none (worker_nodes holds a few rows per cluster).
MARK_MISSING_NODES_DEAD = db.sql(
    "UPDATE worker_nodes SET status = 'DEAD', updated_at = clock_timestamp() WHERE cluster_id = :id AND NOT node_id = ANY(:seen)"
)

# upsert_node: one node's current view. Index: worker_nodes primary key.
UPSERT_NODE = db.sql(
    """
    INSERT INTO worker_nodes (node_id, cluster_id, address, status, resources, in_use, updated_at)
    VALUES (:node_id, :cluster_id, :address, :status, CAST(:res AS jsonb), CAST(:in_use AS jsonb), clock_timestamp())
    ON CONFLICT (node_id) DO UPDATE SET cluster_id = EXCLUDED.cluster_id, address = EXCLUDED.address,
        status = EXCLUDED.status, resources = EXCLUDED.resources, in_use = EXCLUDED.in_use, updated_at = EXCLUDED.updated_at
    """
)

# list_clusters: every cluster recorded. Index: ray_clusters primary key (an ordered scan).
LIST_CLUSTERS = db.sql("SELECT * FROM ray_clusters ORDER BY cluster_id")
# list_nodes: every node recorded. Index: worker_nodes primary key (an ordered scan).
LIST_NODES = db.sql("SELECT * FROM worker_nodes ORDER BY node_id")


async def upsert(conn: db.Connection, cluster: RayCluster) -> None:
    """Record the cluster's current view; nodes no longer reported are marked DEAD."""
    await conn.execute(
        UPSERT_CLUSTER,
        {
            "id": cluster.cluster_id,
            "address": cluster.address,
            "status": cluster.status,
            "n": cluster.num_workers,
            "res": json.dumps(dict(cluster.resources)),
            "avail": json.dumps(dict(cluster.available_resources)),
        },
    )
    await conn.execute(MARK_MISSING_NODES_DEAD, {"id": cluster.cluster_id, "seen": [n.node_id for n in cluster.nodes]})
    for node in cluster.nodes:
        params = {
            "node_id": node.node_id,
            "cluster_id": cluster.cluster_id,
            "address": node.address,
            "status": node.status,
            "res": json.dumps(dict(node.resources)),
            "in_use": json.dumps(dict(node.in_use)),
        }
        await conn.execute(UPSERT_NODE, params)


async def list_clusters(conn: db.Connection) -> list[RayCluster]:
    clusters = await conn.fetch(LIST_CLUSTERS)
    nodes = await conn.fetch(LIST_NODES)
    return [RayCluster.from_row(c, tuple(WorkerNode.from_row(n) for n in nodes if n["cluster_id"] == c["cluster_id"])) for c in clusters]
