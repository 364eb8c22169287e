"""The queue per tenant: an index that gives each tenant's queued jobs in queue order, so a
claim reads the head of each tenant's queue instead of sorting every queued job (a claim took
108 ms with 12,000 jobs queued). The claim walks the tenants table, so every tenant with a job
has its row (jobs.create makes it; jobs older than the tenants table get theirs here).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("INSERT INTO tenants (tenant_id) SELECT DISTINCT tenant_id FROM training_jobs ON CONFLICT (tenant_id) DO NOTHING")
    op.create_index(
        "training_jobs_tenant_queue",
        "training_jobs",
        ["tenant_id", "priority", "created_at", "id"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.drop_index("training_jobs_queue", table_name="training_jobs")


def downgrade() -> None:
    op.create_index("training_jobs_queue", "training_jobs", ["priority", "created_at"], postgresql_where=sa.text("status = 'PENDING'"))
    op.drop_index("training_jobs_tenant_queue", table_name="training_jobs")
