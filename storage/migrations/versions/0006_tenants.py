"""Tenants you can trust: tenants with their quotas, API keys (hashes only), the service's
own database roles, row-level security on every tenant table, and feature data in one
schema per tenant.

- Roles (cluster-wide, created when missing, NOLOGIN): ``aihub_service`` (the API and the
  Ray tasks: every row it sees or writes is filtered by row-level security to the tenant its
  transaction set in ``aihub.tenant_id``; ``*`` for an admin acting on every tenant) and
  ``aihub_dispatcher`` (the claim loop: every job). Neither owns a table. The user of
  DATABASE_URL owns the tables, runs the migrations, and is granted both roles so that its
  sessions can ``SET ROLE`` to them (storage.db.create_engine).
- Feature data: ``features_<tenant>_<md5>`` schemas (aihub_feature_schema), created and
  altered only by aihub_prepare_feature_table, a SECURITY DEFINER function that refuses a
  tenant other than the transaction's, names that are not slugs, and columns beyond the cap.
  The old shared schema ``features`` is copied tenant by tenant (only the columns a tenant
  has values in) and kept as ``features_legacy``: nothing is deleted (an empty one is dropped).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SERVICE = "aihub_service"
DISPATCHER = "aihub_dispatcher"
TENANT_RE = "^[a-z0-9][a-z0-9_-]{0,62}$"
IDENT_RE = "^[a-z_][a-z0-9_]{0,62}$"
# What a service transaction may see: its tenant's rows, or every row for '*' (admins).
VISIBLE = "(tenant_id = current_setting('aihub.tenant_id', true) OR current_setting('aihub.tenant_id', true) = '*')"
JOB_TABLES = ("training_jobs", "model_versions", "tenants", "api_keys")
CHILD_TABLES = ("job_attempts", "job_logs", "job_metrics")  # rows of a job: visible with their job

FEATURE_SCHEMA_FN = """
CREATE OR REPLACE FUNCTION aihub_feature_schema(p_tenant text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT 'features_' || left(p_tenant, 40) || '_' || left(md5(p_tenant), 8) $$
"""

PREPARE_FN = f"""
CREATE OR REPLACE FUNCTION aihub_prepare_feature_table(p_tenant text, p_table text, p_columns text[], p_max_columns integer)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  s text;
  rel regclass;
  have integer;
  col text;
BEGIN
  IF p_tenant IS DISTINCT FROM current_setting('aihub.tenant_id', true) THEN
    RAISE EXCEPTION 'a tenant''s feature tables change only in that tenant''s transaction' USING ERRCODE = '42501';
  END IF;
  IF p_tenant !~ '{TENANT_RE}' THEN
    RAISE EXCEPTION 'invalid tenant id' USING ERRCODE = '22023';
  END IF;
  IF p_table !~ '{IDENT_RE}' THEN
    RAISE EXCEPTION 'invalid table name' USING ERRCODE = '22023';
  END IF;
  s := public.aihub_feature_schema(p_tenant);
  EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', s);
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO {SERVICE}', s);
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I (tenant_id text NOT NULL, series_id text NOT NULL DEFAULT '''', '
                 '"timestamp" timestamptz NOT NULL, PRIMARY KEY (tenant_id, series_id, "timestamp"))', s, p_table);
  rel := format('%I.%I', s, p_table)::regclass;
  IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = rel AND polname = 'tenant_rows') THEN
    EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', s, p_table);
    EXECUTE format('CREATE POLICY tenant_rows ON %I.%I TO {SERVICE} '
                   'USING (tenant_id = current_setting(''aihub.tenant_id'', true)) '
                   'WITH CHECK (tenant_id = current_setting(''aihub.tenant_id'', true))', s, p_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO {SERVICE}', s, p_table);
  END IF;
  SELECT count(*) - 3 INTO have FROM pg_attribute WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped;
  FOREACH col IN ARRAY coalesce(p_columns, ARRAY[]::text[]) LOOP
    IF col !~ '{IDENT_RE}' OR col IN ('tenant_id', 'series_id', 'timestamp') THEN
      RAISE EXCEPTION 'invalid column name' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = rel AND attname = col AND NOT attisdropped) THEN
      IF have >= p_max_columns THEN
        RAISE EXCEPTION 'too many value columns (at most %)', p_max_columns USING ERRCODE = '54011';
      END IF;
      EXECUTE format('ALTER TABLE %I.%I ADD COLUMN %I double precision', s, p_table, col);
      have := have + 1;
    END IF;
  END LOOP;
  RETURN s;
END
$fn$
"""


def _create_roles() -> None:
    for role in (SERVICE, DISPATCHER):
        op.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
        )
        # The owner's sessions switch to the role (SET ROLE) on connect.
        op.execute(f"GRANT {role} TO CURRENT_USER")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("max_queued_jobs", sa.Integer, nullable=False, server_default="100"),
        sa.Column("max_running_jobs", sa.Integer),
        sa.Column("max_priority", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("max_import_bytes", sa.BigInteger, nullable=False, server_default=str(512 * 1024**2)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint(f"tenant_id ~ '{TENANT_RE}'", name="tenant_id_slug"),
        sa.CheckConstraint("max_queued_jobs >= 0 AND (max_running_jobs IS NULL OR max_running_jobs >= 0)", name="tenant_job_limits"),
        sa.CheckConstraint("max_priority BETWEEN 0 AND 3 AND max_import_bytes >= 0", name="tenant_other_limits"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("admin OR tenant_id IS NOT NULL", name="api_key_owner"),
    )
    op.create_index("api_keys_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("api_keys_tenant", "api_keys", ["tenant_id", "created_at"])
    # Quotas and the fair claim count each tenant's queued and running jobs.
    op.create_index(
        "training_jobs_tenant_active",
        "training_jobs",
        ["tenant_id", "status"],
        postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')"),
    )

    _create_roles()
    tables = (*JOB_TABLES, *CHILD_TABLES, "ray_clusters", "worker_nodes")
    for role in (SERVICE, DISPATCHER):
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(tables)} TO {role}")
    for table in (*JOB_TABLES, *CHILD_TABLES):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY dispatcher_rows ON {table} TO {DISPATCHER} USING (true) WITH CHECK (true)")
    for table in JOB_TABLES:
        op.execute(f"CREATE POLICY tenant_rows ON {table} TO {SERVICE} USING {VISIBLE} WITH CHECK {VISIBLE}")
    for table in CHILD_TABLES:
        owned = f"(EXISTS (SELECT 1 FROM training_jobs j WHERE j.id = {table}.job_id))"
        op.execute(f"CREATE POLICY tenant_rows ON {table} TO {SERVICE} USING {owned} WITH CHECK {owned}")

    op.execute(FEATURE_SCHEMA_FN)
    op.execute(PREPARE_FN)
    op.execute("REVOKE ALL ON FUNCTION aihub_prepare_feature_table(text, text, text[], integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION aihub_prepare_feature_table(text, text, text[], integer) TO {SERVICE}")
    _move_shared_features()


def _move_shared_features() -> None:
    """Copy each tenant's rows of the shared ``features`` tables into its own schema, then
    keep the old schema as ``features_legacy`` (rows of ids that are not slugs stay there)."""
    conn = op.get_bind()
    if conn.scalar(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = 'features'")) is None:
        return
    tables = conn.scalars(sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'features' ORDER BY 1")).all()
    for table in tables:
        columns = [
            c
            for c in conn.scalars(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' AND table_name = :t ORDER BY ordinal_position"
                ),
                {"t": table},
            )
            if c not in ("tenant_id", "series_id", "timestamp")
        ]
        tenants = conn.scalars(sa.text(f'SELECT DISTINCT tenant_id FROM features."{table}" WHERE tenant_id ~ :re'), {"re": TENANT_RE}).all()
        for tenant in tenants:
            counted = ", ".join(f'count("{c}")' for c in columns) or "0"
            counts = conn.execute(sa.text(f'SELECT {counted} FROM features."{table}" WHERE tenant_id = :t'), {"t": tenant}).one()
            used = [c for c, n in zip(columns, counts, strict=False) if n]
            conn.execute(sa.text("SELECT set_config('aihub.tenant_id', :t, true)"), {"t": tenant})
            schema = conn.scalar(
                sa.text("SELECT aihub_prepare_feature_table(:t, :table, :cols, 100000)"), {"t": tenant, "table": table, "cols": used}
            )
            names = ", ".join(f'"{c}"' for c in ("tenant_id", "series_id", "timestamp", *used))
            conn.execute(
                sa.text(
                    f'INSERT INTO "{schema}"."{table}" ({names}) SELECT {names} FROM features."{table}" WHERE tenant_id = :t ON CONFLICT DO NOTHING'
                ),
                {"t": tenant},
            )
    conn.execute(sa.text("SELECT set_config('aihub.tenant_id', '', true)"))
    if tables:
        op.execute("ALTER SCHEMA features RENAME TO features_legacy")
    else:
        op.execute("DROP SCHEMA features")


def downgrade() -> None:
    raise NotImplementedError("0006 cannot be undone: tenant data moved to per-tenant schemas (features_legacy keeps the old tables)")
