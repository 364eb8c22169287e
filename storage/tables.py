"""Table definitions (SQLAlchemy Core): the schema the Alembic migrations in
storage/migrations create, mirrored column for column and index for index, as Alembic's
target metadata. tests/integration/test_migrations.py checks that `alembic revision
--autogenerate` finds no difference. The repositories write their SQL as named text
statements."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData()

FEATURE_SCHEMA = "features"

jobs = sa.Table(
    "training_jobs",
    metadata,
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
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("retry_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("config_hash", sa.Text),
    sa.Column("lost_leases", sa.Integer, nullable=False, server_default="0"),
    sa.Column("free_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("request_hash", sa.Text),
    sa.Column("schedule_id", UUID(as_uuid=True), sa.ForeignKey("schedules.id", ondelete="SET NULL")),
    sa.Column("scheduled_for", sa.DateTime(timezone=True)),
    sa.Column("mlflow_run_id", sa.Text),
    # What the running attempt holds on the cluster ({"CPU": 1.0, ...}), set when claimed;
    # claims sum it over every server's RUNNING jobs (storage.queue.held).
    sa.Column("holds", JSONB),
    sa.CheckConstraint("status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED')", name="job_status_known"),
    sa.CheckConstraint("progress BETWEEN 0 AND 100", name="job_progress_range"),
    # The claim: the oldest PENDING job of the best priority.
    sa.Index("training_jobs_tenant_queue", "tenant_id", "priority", "created_at", "id", postgresql_where=sa.text("status = 'PENDING'")),
    # Listings, newest first, per tenant and for everyone.
    sa.Index("training_jobs_tenant_created", "tenant_id", sa.text("created_at DESC"), sa.text("id DESC")),
    sa.Index("training_jobs_created", sa.text("created_at DESC"), sa.text("id DESC")),
    # Idempotent create: one job per (tenant, request_id).
    sa.Index("training_jobs_request_id", "tenant_id", "request_id", unique=True, postgresql_where=sa.text("request_id IS NOT NULL")),
    # Due automatic retries.
    sa.Index("training_jobs_retry_due", "retry_at", postgresql_where=sa.text("status = 'FAILED' AND retry_at IS NOT NULL")),
    # Expired leases and a stopping server's jobs.
    sa.Index("training_jobs_running", "lease_expires_at", postgresql_where=sa.text("status = 'RUNNING'")),
    # Quotas and the fair claim: each tenant's queued and running jobs.
    sa.Index("training_jobs_tenant_active", "tenant_id", "status", postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')")),
    # A schedule's recent jobs; the jobs a schedule list filters by.
    sa.Index("training_jobs_schedule", "schedule_id", sa.text("created_at DESC"), postgresql_where=sa.text("schedule_id IS NOT NULL")),
    # A tenant's jobs made by schedules in the last day (max_scheduled_jobs_per_day).
    sa.Index("training_jobs_scheduled", "tenant_id", "created_at", postgresql_where=sa.text("schedule_id IS NOT NULL")),
    # Retention: finished jobs (and their log lines) older than an age.
    sa.Index("training_jobs_finished", "finished_at", postgresql_where=sa.text("finished_at IS NOT NULL")),
)

attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("claimed_by", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error_reason", sa.Text),
    sa.Column("error_message", sa.Text),
)

logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

metrics = sa.Table(
    "job_metrics",
    metadata,
    sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Float(53), nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("model_type", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id"), nullable=False),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("features", JSONB, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("training_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("training_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("metrics", JSONB, nullable=False),
    sa.Column("config", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("feature_importance", JSONB, nullable=False, server_default="{}"),
    sa.Column("config_hash", sa.Text, nullable=False, server_default=""),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("mlflow_run_id", sa.Text),
    sa.Column("keep", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("tenant_id", "model_type", "version", name="model_versions_tenant_id_model_type_version_key"),
    # A tenant's registry, newest version first.
    sa.Index("model_versions_tenant", "tenant_id", "model_type", sa.text("version DESC")),
    # Whether a job still has a version (retention keeps such jobs).
    sa.Index("model_versions_job", "job_id"),
)

ray_clusters = sa.Table(
    "ray_clusters",
    metadata,
    sa.Column("cluster_id", sa.Text, primary_key=True),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("num_workers", sa.Integer, nullable=False),
    sa.Column("resources", JSONB, nullable=False),
    sa.Column("available_resources", JSONB, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

worker_nodes = sa.Table(
    "worker_nodes",
    metadata,
    sa.Column("node_id", sa.Text, primary_key=True),
    sa.Column("cluster_id", sa.Text, sa.ForeignKey("ray_clusters.cluster_id", ondelete="CASCADE"), nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("resources", JSONB, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("in_use", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
)

# A tenant's quotas (admin-managed; a row is made with the defaults on first use).
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("max_queued_jobs", sa.Integer, nullable=False, server_default="100"),
    sa.Column("max_running_jobs", sa.Integer),
    sa.Column("max_priority", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("max_import_bytes", sa.BigInteger, nullable=False, server_default=str(512 * 1024**2)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    sa.Column("keep_versions", sa.Integer),  # retention: the newest N versions per model type (NULL: all)
    sa.Column("min_schedule_interval_seconds", sa.Integer, nullable=False, server_default="300"),
    sa.Column("max_scheduled_jobs_per_day", sa.Integer, nullable=False, server_default="500"),
    sa.Column("max_open_streams", sa.Integer, nullable=False, server_default="200"),
    sa.CheckConstraint("keep_versions IS NULL OR keep_versions >= 1", name="tenant_keep_versions"),
    sa.CheckConstraint("tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'", name="tenant_id_slug"),
    sa.CheckConstraint("max_queued_jobs >= 0 AND (max_running_jobs IS NULL OR max_running_jobs >= 0)", name="tenant_job_limits"),
    sa.CheckConstraint("max_priority BETWEEN 0 AND 3 AND max_import_bytes >= 0", name="tenant_other_limits"),
    sa.CheckConstraint(
        "min_schedule_interval_seconds >= 1 AND max_scheduled_jobs_per_day >= 0 AND max_open_streams >= 0", name="tenant_operation_limits"
    ),
)

# API keys: only a SHA-256 of each key is kept. tenant_id NULL: an admin key.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("tenant_id", sa.Text),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("local", sa.Boolean, nullable=False, server_default=sa.false()),  # made while authentication was off
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("admin OR tenant_id IS NOT NULL", name="api_key_owner"),
    # A key is found by its hash.
    sa.Index("api_keys_hash", "key_hash", unique=True),
    # A tenant's keys, oldest first.
    sa.Index("api_keys_tenant", "tenant_id", "created_at"),
)

# The audit trail: key create/revoke, quota changes, alias moves, admin calls for other
# tenants. tenant_id: the tenant acted on ('*': every tenant). Read by admins only (RLS).
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False, server_default=""),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Index("audit_events_tenant", "tenant_id", sa.text("id DESC")),
    sa.Index("audit_events_action", "action", sa.text("id DESC")),
)

# Cron schedules: each firing creates one job (action train) and/or one degradation check.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("cron", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
    sa.Column("window", sa.Text),
    sa.Column("action", sa.Text, nullable=False, server_default="train"),
    sa.Column("model_type", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("config", JSONB, nullable=False),
    sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("degradation", JSONB),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fired_at", sa.DateTime(timezone=True)),
    sa.Column("missed_firings", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("alias", sa.Text),  # the alias its firings use
    sa.Column("forecast", JSONB),  # action forecast: horizon_hours, series
    sa.Column("promotion", JSONB),  # action train_and_promote: window, metric, min_improvement
    sa.CheckConstraint(
        "action IN ('train', 'evaluate', 'train_and_evaluate', 'forecast', 'train_and_promote')", name="schedule_action_known"
    ),
    # The firing loop: due schedules, soonest first.
    sa.Index("schedules_due", "next_fire_at", postgresql_where=sa.text("NOT paused")),
    # A tenant's schedules, oldest first.
    sa.Index("schedules_tenant", "tenant_id", "created_at"),
)

# A tenant's webhooks (alerts).
alert_targets = sa.Table(
    "alert_targets",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("events", ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # A tenant's targets (and the trigger that alerts them).
    sa.Index("alert_targets_tenant", "tenant_id"),
)

# The alert outbox: one row per (event, target), delivered with retries.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("target_id", UUID(as_uuid=True), sa.ForeignKey("alert_targets.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("body", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="PENDING"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
    sa.Column("last_error", sa.Text),
    sa.Column("response_status", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status IN ('PENDING', 'DELIVERED', 'FAILED')", name="alert_delivery_status_known"),
    # Deliveries due now.
    sa.Index("alert_deliveries_due", "next_attempt_at", postgresql_where=sa.text("status = 'PENDING'")),
    # A tenant's deliveries, newest first.
    sa.Index("alert_deliveries_tenant", "tenant_id", sa.text("id DESC")),
)

# What a schedule's firings leave to any server: degradation checks (a version scored on a
# recent window), forecasts (written to the forecast store), promotions (champion vs challenger).
degradation_checks = sa.Table(
    "degradation_checks",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("schedule_id", UUID(as_uuid=True), sa.ForeignKey("schedules.id", ondelete="SET NULL")),
    sa.Column("model_id", UUID(as_uuid=True), sa.ForeignKey("model_versions.id")),
    sa.Column("model_type", sa.Text, nullable=False),
    sa.Column("policy", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("status", sa.Text, nullable=False, server_default="PENDING"),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("metrics", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("baseline", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("degraded", sa.Boolean),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("kind", sa.Text, nullable=False, server_default="degradation"),
    sa.Column("alias", sa.Text),
    sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="SET NULL")),
    sa.Column("promoted", sa.Boolean),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
    sa.CheckConstraint("status IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')", name="degradation_check_status_known"),
    sa.CheckConstraint("kind IN ('degradation', 'forecast', 'promotion')", name="schedule_task_kind_known"),
    # Tasks to run (and running ones whose claim expired), by when they are due.
    sa.Index("degradation_checks_due", "due_at", postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')")),
    # A schedule's checks, newest first.
    sa.Index("degradation_checks_schedule", "schedule_id", sa.text("created_at DESC")),
)

# Aliases of a tenant's model type (production, staging, ...) and the version each points at.
model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("model_type", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("model_id", UUID(as_uuid=True), sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "model_type", "alias", name="model_aliases_pkey"),
    sa.CheckConstraint("alias ~ '^[a-z0-9][a-z0-9_-]{0,62}$'", name="model_alias_slug"),
    # The aliases of a version (its JSON lists them; deletion and retention spare it).
    sa.Index("model_aliases_model", "model_id"),
)

# Every set, move and removal of an alias, never updated.
alias_moves = sa.Table(
    "alias_moves",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("model_type", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("from_model_id", UUID(as_uuid=True)),
    sa.Column("to_model_id", UUID(as_uuid=True)),
    sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("moved_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    # An alias's moves, newest first.
    sa.Index("alias_moves_alias", "tenant_id", "model_type", "alias", sa.text("id DESC")),
)

# The tenant's forecast store: what scheduled forecasts wrote.
forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("model_id", UUID(as_uuid=True), sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("origin", sa.DateTime(timezone=True), nullable=False),
    sa.Column("series_id", sa.Text, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("forecast", sa.Float, nullable=False),
    sa.Column("alias", sa.Text, nullable=False, server_default=""),
    sa.Column("schedule_id", UUID(as_uuid=True), sa.ForeignKey("schedules.id", ondelete="SET NULL")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "model_id", "origin", "series_id", "timestamp", name="forecasts_pkey"),
    # A tenant's forecasts, newest origin first.
    sa.Index("forecasts_origin", "tenant_id", sa.text("origin DESC")),
)
