"""Security hardening (issue 26): quotas that bound schedules and streams, keys with a
lifetime, and an audit trail admins can read.

- ``tenants``: ``min_schedule_interval_seconds`` (the shortest time between two firings of
  one schedule; default 300), ``max_scheduled_jobs_per_day`` (jobs that schedules may create
  in any 24 hours; default 500) and ``max_open_streams`` (log and watch streams open at once;
  default 200: room for a client waiting on every queued job of its tenant at once).
- ``api_keys``: ``local`` (made while authentication was off: refused once it is required),
  ``expires_at`` (optional) and ``last_used_at`` (stamped at most once per cache period).
- ``audit_events``: who did what to whom: key create and revoke, quota changes, alias moves
  and every admin call that acts for another tenant or for all. Written in any tenant's
  transaction; read only by admins (scope ``*``), never updated.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SERVICE = "aihub_service"
DISPATCHER = "aihub_dispatcher"
ADMINS = "(current_setting('aihub.tenant_id', true) = '*')"


def upgrade() -> None:
    op.add_column("tenants", sa.Column("min_schedule_interval_seconds", sa.Integer, nullable=False, server_default="300"))
    op.add_column("tenants", sa.Column("max_scheduled_jobs_per_day", sa.Integer, nullable=False, server_default="500"))
    op.add_column("tenants", sa.Column("max_open_streams", sa.Integer, nullable=False, server_default="200"))
    op.create_check_constraint(
        "tenant_operation_limits",
        "tenants",
        "min_schedule_interval_seconds >= 1 AND max_scheduled_jobs_per_day >= 0 AND max_open_streams >= 0",
    )
    op.add_column("api_keys", sa.Column("local", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True)))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False, server_default=""),
        sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("audit_events_tenant", "audit_events", ["tenant_id", sa.text("id DESC")])
    op.create_index("audit_events_action", "audit_events", ["action", sa.text("id DESC")])
    # Schedules' jobs of the last day, counted per tenant at each firing.
    op.create_index(
        "training_jobs_scheduled", "training_jobs", ["tenant_id", "created_at"], postgresql_where=sa.text("schedule_id IS NOT NULL")
    )
    op.execute(f"GRANT SELECT, INSERT ON audit_events TO {SERVICE}")
    op.execute(f"GRANT INSERT ON audit_events TO {DISPATCHER}")
    op.execute(f"GRANT USAGE ON SEQUENCE audit_events_id_seq TO {SERVICE}, {DISPATCHER}")
    op.execute("ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY audit_write ON audit_events FOR INSERT TO {SERVICE}, {DISPATCHER} WITH CHECK (true)")
    op.execute(f"CREATE POLICY audit_read ON audit_events FOR SELECT TO {SERVICE} USING {ADMINS}")


def downgrade() -> None:
    op.drop_index("training_jobs_scheduled", table_name="training_jobs")
    op.drop_table("audit_events")
    for column in ("last_used_at", "expires_at", "local"):
        op.drop_column("api_keys", column)
    op.drop_constraint("tenant_operation_limits", "tenants")
    for column in ("max_open_streams", "max_scheduled_jobs_per_day", "min_schedule_interval_seconds"):
        op.drop_column("tenants", column)
