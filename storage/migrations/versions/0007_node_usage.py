"""What each Ray node has in use now (CPU, GPU, memory in bytes, ...), next to its totals,
so the cluster registry shows per-node usage.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("worker_nodes", sa.Column("in_use", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")))


def downgrade() -> None:
    op.drop_column("worker_nodes", "in_use")
