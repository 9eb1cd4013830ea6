"""jobs by tenant: an index on (tenant_id, pk) serves a tenant's job list newest first

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:52:32.505861
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_tenant_pk", ["tenant_id", "pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_pk")
