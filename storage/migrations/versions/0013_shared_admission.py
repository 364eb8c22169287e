"""Admission shared by every server (issue 28): ``training_jobs.holds`` is what a running
attempt holds on the Ray cluster (CPU, GPU, memory), written when a server claims it. A
claim sums it over every RUNNING job, on every server, under one advisory lock
(storage.queue.ADMISSION_LOCK), so two servers on one cluster never admit more than it has.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("holds", JSONB))


def downgrade() -> None:
    op.drop_column("training_jobs", "holds")
