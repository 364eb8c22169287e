"""Models that get used: aliases (production, staging, ...) that point at a version, the
record of every move, scheduled forecasts and champion/challenger promotions.

- ``model_aliases``: one row per (tenant, model_type, alias), the version it points at. A
  version an alias points at cannot be deleted (the foreign key, and a named error before
  it) or swept by retention (storage.models.EXPIRE_VERSIONS skips it).
- ``alias_moves``: each set, move and removal: when, by which key (or schedule), from which
  version to which, and why. Never updated; read newest first per alias.
- ``schedules``: actions ``forecast`` and ``train_and_promote``, the ``alias`` a firing uses,
  and their policies (``forecast``, ``promotion``).
- ``degradation_checks`` becomes the queue of every task a firing leaves to any server:
  ``kind`` degradation, forecast or promotion, the ``alias`` resolved, the challenger's
  ``job_id`` and whether it was ``promoted``; ``due_at``: a promotion waits for its job.
- ``forecasts``: the tenant's forecast store, one row per (version, origin, series, hour);
  a firing written twice writes the same rows (an upsert), so it is idempotent.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SERVICE = "aihub_service"
DISPATCHER = "aihub_dispatcher"
VISIBLE = "(tenant_id = current_setting('aihub.tenant_id', true) OR current_setting('aihub.tenant_id', true) = '*')"
TABLES = ("model_aliases", "alias_moves", "forecasts")
ACTIONS = "('train', 'evaluate', 'train_and_evaluate', 'forecast', 'train_and_promote')"


def upgrade() -> None:
    op.create_table(
        "model_aliases",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("model_id", UUID(as_uuid=True), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "model_type", "alias", name="model_aliases_pkey"),
        sa.CheckConstraint("alias ~ '^[a-z0-9][a-z0-9_-]{0,62}$'", name="model_alias_slug"),
    )
    op.create_index("model_aliases_model", "model_aliases", ["model_id"])
    op.create_table(
        "alias_moves",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("model_type", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("from_model_id", UUID(as_uuid=True)),
        sa.Column("to_model_id", UUID(as_uuid=True)),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("moved_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("alias_moves_alias", "alias_moves", ["tenant_id", "model_type", "alias", sa.text("id DESC")])
    op.create_table(
        "forecasts",
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
    )
    op.create_index("forecasts_origin", "forecasts", ["tenant_id", sa.text("origin DESC")])
    op.add_column("schedules", sa.Column("alias", sa.Text))
    op.add_column("schedules", sa.Column("forecast", JSONB))
    op.add_column("schedules", sa.Column("promotion", JSONB))
    op.drop_constraint("schedule_action_known", "schedules")
    op.create_check_constraint("schedule_action_known", "schedules", f"action IN {ACTIONS}")
    op.add_column("degradation_checks", sa.Column("kind", sa.Text, nullable=False, server_default="degradation"))
    op.add_column("degradation_checks", sa.Column("alias", sa.Text))
    op.add_column("degradation_checks", sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("training_jobs.id", ondelete="SET NULL")))
    op.add_column("degradation_checks", sa.Column("promoted", sa.Boolean))
    op.add_column(
        "degradation_checks", sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()"))
    )
    op.create_check_constraint("schedule_task_kind_known", "degradation_checks", "kind IN ('degradation', 'forecast', 'promotion')")
    op.drop_index("degradation_checks_due", table_name="degradation_checks")
    op.create_index(
        "degradation_checks_due", "degradation_checks", ["due_at"], postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')")
    )
    for role in (SERVICE, DISPATCHER):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {role}")
        op.execute(f"GRANT USAGE ON SEQUENCE alias_moves_id_seq TO {role}")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY dispatcher_rows ON {table} TO {DISPATCHER} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY tenant_rows ON {table} TO {SERVICE} USING {VISIBLE} WITH CHECK {VISIBLE}")


def downgrade() -> None:
    op.drop_index("degradation_checks_due", table_name="degradation_checks")
    op.create_index(
        "degradation_checks_due", "degradation_checks", ["created_at"], postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')")
    )
    op.drop_constraint("schedule_task_kind_known", "degradation_checks")
    for column in ("due_at", "promoted", "job_id", "alias", "kind"):
        op.drop_column("degradation_checks", column)
    op.drop_constraint("schedule_action_known", "schedules")
    op.create_check_constraint("schedule_action_known", "schedules", "action IN ('train', 'evaluate', 'train_and_evaluate')")
    for column in ("promotion", "forecast", "alias"):
        op.drop_column("schedules", column)
    op.drop_table("forecasts")
    op.drop_table("alias_moves")
    op.drop_table("model_aliases")
