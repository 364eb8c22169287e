"""Initial schema: jobs, attempts, logs, metrics, model versions, Ray clusters, worker nodes,
and the schema that holds tenant feature tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS features")
    op.create_table(
        "training_jobs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.Text, nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("progress", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("current_step", sa.Text, nullable=False, server_default=""),
        sa.Column("config", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("error_reason", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("error_details", JSONB),
        sa.Column("model_version", sa.Integer),
        sa.Column("log_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_expires_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED')", name="job_status_known"),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name="job_progress_range"),
    )
    # Serves the claim: the oldest PENDING job of the best priority.
    op.create_index(
        "training_jobs_queue",
        "training_jobs",
        ["priority", "created_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    # Serves listings: newest first, per tenant (and status).
    op.create_index("training_jobs_tenant_created", "training_jobs", ["tenant_id", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("training_jobs_created", "training_jobs", [sa.text("created_at DESC"), sa.text("id DESC")])
    # Idempotent create: one job per (tenant, request_id).
    op.create_index(
        "training_jobs_request_id",
        "training_jobs",
        ["tenant_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_table(
        "job_attempts",
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("claimed_by", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("error_reason", sa.Text),
        sa.Column("error_message", sa.Text),
    )
    op.create_table(
        "job_logs",
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "job_metrics",
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Float(53), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id"), nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("features", JSONB, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("training_start", TS, nullable=False),
        sa.Column("training_end", TS, nullable=False),
        sa.Column("metrics", JSONB, nullable=False),
        sa.Column("config", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "model_type", "version"),
    )
    op.create_table(
        "ray_clusters",
        sa.Column("cluster_id", sa.Text, primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("num_workers", sa.Integer, nullable=False),
        sa.Column("resources", JSONB, nullable=False),
        sa.Column("available_resources", JSONB, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "worker_nodes",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("cluster_id", sa.Text, sa.ForeignKey("ray_clusters.cluster_id", ondelete="CASCADE"), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("resources", JSONB, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("worker_nodes", "ray_clusters", "model_versions", "job_metrics", "job_logs", "job_attempts", "training_jobs"):
        op.drop_table(table)
