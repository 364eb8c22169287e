"""Running it unattended: schedules (cron retraining and degradation checks), alert targets
and their deliveries (an outbox), the MLflow run of a job and of a model version, a keep flag
on model versions and a per-tenant retention policy.

- ``schedules``: a cron (in a time zone), the job it creates at each firing (config,
  priority, metadata, a rolling ``window``), and ``next_fire_at``, which the firing
  transaction moves on (``FOR UPDATE SKIP LOCKED``): one job per firing across servers.
- ``training_jobs.schedule_id`` / ``scheduled_for``: the schedule and firing a job came from.
- ``alert_targets``: a tenant's webhooks (URL, HMAC secret, the events it wants).
- ``alert_deliveries``: one row per (event, target), written in the transaction that caused
  the event; a job that FAILS for good writes its rows by the trigger ``aihub_job_failed``
  (every failure path: the task, the dispatcher, a lost lease). Delivered with retries.
- ``degradation_checks``: a scheduled evaluation of the tenant's current model version.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SERVICE = "aihub_service"
DISPATCHER = "aihub_dispatcher"
VISIBLE = "(tenant_id = current_setting('aihub.tenant_id', true) OR current_setting('aihub.tenant_id', true) = '*')"
TABLES = ("schedules", "alert_targets", "alert_deliveries", "degradation_checks")

# A job that FAILED for good (no automatic retry planned): one delivery per target of its
# tenant that wants job_failed. SECURITY DEFINER: written whichever role failed the job.
JOB_FAILED_FN = """
CREATE OR REPLACE FUNCTION aihub_job_failed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
  INSERT INTO alert_deliveries (tenant_id, target_id, event, body)
  SELECT NEW.tenant_id, t.id, 'job_failed',
         jsonb_build_object('event', 'job_failed', 'tenant_id', NEW.tenant_id, 'job_id', NEW.id,
                            'schedule_id', NEW.schedule_id, 'algorithm', NEW.algorithm, 'attempt', NEW.attempt,
                            'reason', NEW.error_reason, 'message', NEW.error_message,
                            'occurred_at', to_char(NEW.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                            'link', '/ai/training/jobs/' || NEW.id)
    FROM alert_targets t
   WHERE t.tenant_id = NEW.tenant_id AND 'job_failed' = ANY(t.events);
  RETURN NULL;
END
$fn$
"""


def upgrade() -> None:
    op.create_table(
        "schedules",
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
        sa.CheckConstraint("action IN ('train', 'evaluate', 'train_and_evaluate')", name="schedule_action_known"),
    )
    op.create_index("schedules_due", "schedules", ["next_fire_at"], postgresql_where=sa.text("NOT paused"))
    op.create_index("schedules_tenant", "schedules", ["tenant_id", "created_at"])
    op.add_column("training_jobs", sa.Column("schedule_id", UUID(as_uuid=True), sa.ForeignKey("schedules.id", ondelete="SET NULL")))
    op.add_column("training_jobs", sa.Column("scheduled_for", sa.DateTime(timezone=True)))
    op.add_column("training_jobs", sa.Column("mlflow_run_id", sa.Text))
    op.create_index(
        "training_jobs_schedule",
        "training_jobs",
        ["schedule_id", sa.text("created_at DESC")],
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
    )
    op.create_index("training_jobs_finished", "training_jobs", ["finished_at"], postgresql_where=sa.text("finished_at IS NOT NULL"))
    op.add_column("model_versions", sa.Column("mlflow_run_id", sa.Text))
    op.add_column("model_versions", sa.Column("keep", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("model_versions_job", "model_versions", ["job_id"])
    op.add_column("tenants", sa.Column("keep_versions", sa.Integer))
    op.create_check_constraint("tenant_keep_versions", "tenants", "keep_versions IS NULL OR keep_versions >= 1")

    op.create_table(
        "alert_targets",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("events", ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("alert_targets_tenant", "alert_targets", ["tenant_id"])
    op.create_table(
        "alert_deliveries",
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
    )
    op.create_index("alert_deliveries_due", "alert_deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'PENDING'"))
    op.create_index("alert_deliveries_tenant", "alert_deliveries", ["tenant_id", sa.text("id DESC")])
    op.create_table(
        "degradation_checks",
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
        sa.CheckConstraint("status IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')", name="degradation_check_status_known"),
    )
    op.create_index(
        "degradation_checks_due", "degradation_checks", ["created_at"], postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')")
    )
    op.create_index("degradation_checks_schedule", "degradation_checks", ["schedule_id", sa.text("created_at DESC")])

    for role in (SERVICE, DISPATCHER):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {role}")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY dispatcher_rows ON {table} TO {DISPATCHER} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY tenant_rows ON {table} TO {SERVICE} USING {VISIBLE} WITH CHECK {VISIBLE}")
    op.execute(JOB_FAILED_FN)
    op.execute("REVOKE ALL ON FUNCTION aihub_job_failed() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER aihub_job_failed AFTER UPDATE OF status ON training_jobs FOR EACH ROW "
        "WHEN (NEW.status = 'FAILED' AND NEW.retry_at IS NULL AND OLD.status <> 'FAILED') EXECUTE FUNCTION aihub_job_failed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER aihub_job_failed ON training_jobs")
    op.execute("DROP FUNCTION aihub_job_failed()")
    op.drop_table("degradation_checks")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_targets")
    op.drop_constraint("tenant_keep_versions", "tenants")
    op.drop_column("tenants", "keep_versions")
    op.drop_index("model_versions_job", table_name="model_versions")
    op.drop_column("model_versions", "keep")
    op.drop_column("model_versions", "mlflow_run_id")
    op.drop_index("training_jobs_finished", table_name="training_jobs")
    op.drop_index("training_jobs_schedule", table_name="training_jobs")
    op.drop_column("training_jobs", "mlflow_run_id")
    op.drop_column("training_jobs", "scheduled_for")
    op.drop_column("training_jobs", "schedule_id")
    op.drop_table("schedules")
