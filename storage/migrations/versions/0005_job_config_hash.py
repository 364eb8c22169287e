"""A job's config hash, computed once when it is created (the SHA-256 of the training
spec's canonical form; its model version carries the same). NULL for older jobs.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("config_hash", sa.Text))


def downgrade() -> None:
    op.drop_column("training_jobs", "config_hash")
