"""file samples: a dataset's sample count, read at upload, for the job's compute bound

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("samples")
