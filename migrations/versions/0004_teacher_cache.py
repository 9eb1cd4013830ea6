"""teacher cache: entries of teacher outputs kept for later jobs, the files they come from, their readers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:15:16.699253
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teacher_cache_entries",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant_id", "key", name="uq_teacher_cache_tenant_key"),
    )
    with op.batch_alter_table("teacher_cache_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_teacher_cache_entries_last_used_at"), ["last_used_at"], unique=False
        )

    op.create_table(
        "teacher_cache_files",
        sa.Column("entry_pk", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["entry_pk"], ["teacher_cache_entries.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_pk", "file_id"),
    )
    with op.batch_alter_table("teacher_cache_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_teacher_cache_files_file_id"), ["file_id"], unique=False)

    op.create_table(
        "teacher_cache_readers",
        sa.Column("entry_pk", sa.Integer(), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["entry_pk"], ["teacher_cache_entries.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_pk"], ["jobs.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_pk", "job_pk"),
    )
    with op.batch_alter_table("teacher_cache_readers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_teacher_cache_readers_job_pk"), ["job_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("teacher_cache_readers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teacher_cache_readers_job_pk"))

    op.drop_table("teacher_cache_readers")
    with op.batch_alter_table("teacher_cache_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teacher_cache_files_file_id"))

    op.drop_table("teacher_cache_files")
    with op.batch_alter_table("teacher_cache_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teacher_cache_entries_last_used_at"))

    op.drop_table("teacher_cache_entries")
