"""The database tables. The schema is made and changed only by the Alembic migrations in `migrations/`."""

import secrets
import time

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")
DEFAULT_TENANT = "default"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    pass


class File(Base):
    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("file"))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_TENANT)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    samples: Mapped[int | None] = mapped_column(BigInteger)  # a dataset's, read at upload (JSON Lines: lines)
    # Read at upload: an `hf` teacher's `HFFolder`; a JSON Lines or Parquet dataset's `{"records": shape}`
    details: Mapped[dict | None] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Job(Base):
    __tablename__ = "jobs"
    # A tenant's jobs newest first (the lists), and those of one status.
    __table_args__ = (
        Index("ix_jobs_tenant_pk", "tenant_id", "pk"),
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    request: Mapped[dict] = mapped_column(JSONType)
    progress: Mapped[dict] = mapped_column(JSONType)
    metrics: Mapped[dict | None] = mapped_column(JSONType)
    error: Mapped[dict | None] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)

    files: Mapped[list["JobFile"]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    artifacts: Mapped[list["Artifact"]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="Artifact.pk"
    )


class JobFile(Base):
    """Which files a job reads: a file in use by an unfinished job cannot be deleted."""

    __tablename__ = "job_files"

    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(32))


class JobEvent(Base):
    __tablename__ = "job_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("evt"))
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_pk", "name", "step", name="uq_job_metrics_job_name_step"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_pk", "name", name="uq_artifacts_job_name"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128))
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class IdempotencyRecord(Base):
    """The first response to a POST with an `Idempotency-Key`, replayed for retries of the same body."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("tenant_id", "key", "route", name="uq_idempotency_tenant_key_route"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSONType)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class ApiKey(Base):
    """An API key of a tenant. Only a hash of the key's secret is stored (see `service.auth`)."""

    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class TeacherCacheEntry(Base):
    """One teacher's outputs over one dataset, kept for the tenant's later jobs
    (`core.teacher_cache_store`)."""

    __tablename__ = "teacher_cache_entries"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_teacher_cache_tenant_key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))  # the engine's hash of all the outputs depend on
    storage_key: Mapped[str] = mapped_column(String(512))  # the folder of its files
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    last_used_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class TeacherCacheFile(Base):
    """A file an entry was computed from (or read with): deleting the file deletes the entry."""

    __tablename__ = "teacher_cache_files"

    entry_pk: Mapped[int] = mapped_column(
        ForeignKey("teacher_cache_entries.pk", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class TeacherCacheReader(Base):
    """A job that reads an entry: while the job is unfinished, the entry is never evicted."""

    __tablename__ = "teacher_cache_readers"

    entry_pk: Mapped[int] = mapped_column(
        ForeignKey("teacher_cache_entries.pk", ondelete="CASCADE"), primary_key=True
    )
    job_pk: Mapped[int] = mapped_column(
        ForeignKey("jobs.pk", ondelete="CASCADE"), primary_key=True, index=True
    )
