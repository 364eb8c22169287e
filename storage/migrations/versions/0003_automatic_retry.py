"""Automatic retry: when a FAILED job goes back to the queue by itself.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("retry_at", sa.DateTime(timezone=True)))
    # Serves the requeue of due retries: only FAILED jobs with a retry planned.
    op.create_index(
        "training_jobs_retry_due", "training_jobs", ["retry_at"], postgresql_where=sa.text("status = 'FAILED' AND retry_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("training_jobs_retry_due")
    op.drop_column("training_jobs", "retry_at")
