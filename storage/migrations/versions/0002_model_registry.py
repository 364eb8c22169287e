"""Model registry: feature importance, config hash for lineage, soft deletion.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("feature_importance", JSONB, nullable=False, server_default="{}"))
    op.add_column("model_versions", sa.Column("config_hash", sa.Text, nullable=False, server_default=""))
    op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    # Serves tenant listings of the registry.
    op.create_index("model_versions_tenant", "model_versions", ["tenant_id", "model_type", sa.text("version DESC")])


def downgrade() -> None:
    op.drop_index("model_versions_tenant")
    for col in ("deleted_at", "config_hash", "feature_importance"):
        op.drop_column("model_versions", col)
