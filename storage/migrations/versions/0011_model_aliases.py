"""Models that get used: aliases (production, staging, ...) that point at a version, and the
record of every move.

- ``model_aliases``: one row per (tenant, model_type, alias), the version it points at. A
  version an alias points at cannot be deleted (the foreign key, and a named error before
  it) or swept by retention (storage.models.EXPIRE_VERSIONS skips it).
- ``alias_moves``: each set, move and removal: when, by which key (or schedule), from which
  version to which, and why. Never updated; read newest first per alias.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SERVICE = "aihub_service"
DISPATCHER = "aihub_dispatcher"
VISIBLE = "(tenant_id = current_setting('aihub.tenant_id', true) OR current_setting('aihub.tenant_id', true) = '*')"
TABLES = ("model_aliases", "alias_moves")


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
    for role in (SERVICE, DISPATCHER):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(TABLES)} TO {role}")
        op.execute(f"GRANT USAGE ON SEQUENCE alias_moves_id_seq TO {role}")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY dispatcher_rows ON {table} TO {DISPATCHER} USING (true) WITH CHECK (true)")
        op.execute(f"CREATE POLICY tenant_rows ON {table} TO {SERVICE} USING {VISIBLE} WITH CHECK {VISIBLE}")


def downgrade() -> None:
    op.drop_table("alias_moves")
    op.drop_table("model_aliases")
