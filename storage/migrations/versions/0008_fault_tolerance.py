"""Fault tolerance: how many times a job's lease was lost (its own cap), how many attempts
were handed back without failing (they do not use the retry budget), and a fingerprint of
the create request (a request_id reused with another request is refused).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("lost_leases", sa.Integer, nullable=False, server_default="0"))
    op.add_column("training_jobs", sa.Column("free_attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("training_jobs", sa.Column("request_hash", sa.Text))


def downgrade() -> None:
    op.drop_column("training_jobs", "request_hash")
    op.drop_column("training_jobs", "free_attempts")
    op.drop_column("training_jobs", "lost_leases")
