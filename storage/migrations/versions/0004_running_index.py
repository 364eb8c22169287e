"""An index over RUNNING jobs, for the requeue of expired leases (every dispatch pass)
and the hand-back of a stopping server's jobs; without it both scan every job ever made.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("training_jobs_running", "training_jobs", ["lease_expires_at"], postgresql_where=sa.text("status = 'RUNNING'"))


def downgrade() -> None:
    op.drop_index("training_jobs_running")
