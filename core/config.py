"""Settings, all from `DISTILL_*` environment variables (see the README's reference)."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.plan.hf_archive import HFArchiveLimits
from engine.plan.hf_models import HF_TASKS

S3_SCHEME = "s3://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    home: Path = Field(default=Path("./var"), description="Where the embedded default keeps everything.")
    database_url: str | None = Field(default=None, description="Default: SQLite under `home`.")
    broker_url: str | None = Field(default=None, description="Default: a filesystem broker under `home`.")
    storage_url: str | None = Field(
        default=None,
        description="A local (or shared) folder, or `s3://bucket/prefix`: an S3-compatible bucket, its "
        "endpoint, region and credentials from the AWS_* settings. Default: `home`/storage.",
    )
    s3_presign: bool = Field(
        default=False,
        description="With an s3:// storage, downloads answer 307 to a presigned GET URL of the object (valid "
        "15 minutes) instead of streaming its bytes through the API.",
    )
    auth: Literal["off", "on"] = "off"
    allow_unauthenticated_bind: bool = Field(
        default=False,
        description="Serve a non-loopback address with auth off (a container published on loopback).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="With auth on, `GET /metrics` asks for `Authorization: Bearer <this>` (unset: /metrics "
        "is off). With auth off it is open, like the rest of the loopback-only service.",
    )
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_concurrent_jobs: int | None = Field(
        default=None, gt=0, description="Per tenant: jobs queued, validating, running or cancelling at once."
    )
    max_stored_bytes: int | None = Field(
        default=None, gt=0, description="Per tenant: the bytes of all its uploaded files together."
    )
    allow_pt2: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="pt2 teachers can unpickle when loaded: `auto` allows them only while auth is off.",
    )
    threads: int = Field(
        default=40,
        ge=1,
        le=1000,
        description="Threads a process runs blocking work on (the API's routes, database reads); its "
        "database pool holds as many connections, so no thread waits for one.",
    )
    reads_on_loop: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Where the API's job and file reads run: on its event loop (`on`), which saves a hop "
        "to a thread and back per read but holds the loop for the database's round trip, or on its "
        "threads (`off`). `auto`: on the loop for SQLite and a database server on this machine (loopback, "
        "Unix socket), on the threads for one across a network.",
    )
    task_queue: str = "gpu"
    progress_interval_seconds: float = Field(
        default=1.0, ge=0.0, description="Least time between progress writes."
    )
    cancel_check_seconds: float = Field(default=0.25, ge=0.0, description="Least time between cancel checks.")
    heartbeat_seconds: float = Field(
        default=5.0, gt=0.0, description="How often a running job says it is alive."
    )
    heartbeat_timeout_seconds: float = Field(
        default=60.0, gt=0.0, description="A job silent this long lost its worker: it is re-queued."
    )
    reaper_interval_seconds: float = Field(
        default=15.0, gt=0.0, description="How often workers look for them."
    )
    checkpoint_seconds: float = Field(
        default=300.0,
        ge=0.0,
        description="Least time between checkpoints of a training job (0: every step); each run's end "
        "is saved too. A job whose worker is lost resumes from its last checkpoint.",
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Worker losses before a job fails.")
    max_model_parameters: int | None = Field(
        default=None,
        gt=0,
        description="Parameters of any one model of a job (default: what DISTILL_MAX_JOB_MEMORY_BYTES "
        "trains, at 16 bytes a parameter with Adam).",
    )
    max_job_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Memory a job's training may need at its peak, estimated from its specs at submission "
        "(default: 80% of this machine's memory; set it to a GPU's memory for GPU workers).",
    )
    max_job_epochs: int = Field(
        default=10_000,
        ge=1,
        description="Epochs of all of a job's runs together: trials, generations, each model of a cohort.",
    )
    max_job_seconds: float = Field(
        default=24 * 3600.0,
        gt=0.0,
        description="Wall-clock seconds a job may take from its worker's claim: the teachers' loading, the "
        "teacher-output cache's pass, every `auto` trial and generation together (a request's "
        "`training.max_seconds` may ask for less). Past it the job ends `failed` (`time_limit_exceeded`), "
        "its checkpoint kept.",
    )
    stop_grace_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description="After a cancel, or past a job's time bound, how long the training may take to stop "
        "at a step boundary before its worker ends the job's process.",
    )
    teacher_cache_max_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description="What all kept teacher outputs (`distillation.teacher_cache`) may take in the storage "
        "together; past it the least recently used go, never one an unfinished job reads (0: keep none).",
    )
    max_job_sample_epochs: int = Field(
        default=10**9,
        ge=1,
        description="Training samples times the epochs of all of a job's runs (DISTILL_MAX_JOB_EPOCHS' "
        "count): what one job may pass through its students in all.",
    )

    hf_max_archive_members: int = Field(
        default=10_000,
        ge=1,
        description="Entries (files and folders) an uploaded model archive (`hf` teacher) may hold.",
    )
    hf_max_member_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Bytes of any one file of an uploaded model archive, unpacked (default: "
        "DISTILL_HF_MAX_UNPACKED_BYTES).",
    )
    hf_max_unpacked_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Bytes of all the files of an uploaded model archive together, unpacked (default: twice "
        "DISTILL_MAX_UPLOAD_BYTES: safetensors weights hardly compress).",
    )
    hf_model_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default=tuple(HF_TASKS),
        min_length=1,
        description="The `model_type`s of transformers an `hf` teacher may have, comma-separated "
        "(default: every text and image classifier and causal language model the service builds).",
    )

    @field_validator("hf_model_types", mode="before")
    @classmethod
    def _known_model_types(cls, names: object) -> object:
        if isinstance(names, str):
            names = tuple(name.strip() for name in names.split(",") if name.strip())
        unknown = [name for name in names if name not in HF_TASKS] if isinstance(names, tuple | list) else []
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))}: not among the model types the service builds: "
                f"{', '.join(sorted(HF_TASKS))}"
            )
        return names

    @field_validator("storage_url")
    @classmethod
    def _folder_or_bucket(cls, url: str | None) -> str | None:
        if url is None or "://" not in url:
            return url
        if not url.startswith(S3_SCHEME) or not urlsplit(url).netloc:
            raise ValueError("give a local (or shared) folder's path, or s3://bucket/prefix")
        return url

    @field_validator("s3_presign")
    @classmethod
    def _presign_needs_a_bucket(cls, presign: bool, info: ValidationInfo) -> bool:
        if presign and not (info.data.get("storage_url") or "").startswith(S3_SCHEME):
            raise ValueError("presigned URLs need a bucket: DISTILL_STORAGE_URL=s3://bucket/prefix")
        return presign

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'distill.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def pt2_allowed(self) -> bool:
        """Loading a pt2 archive can unpickle: trust every uploader only in the single-user default."""
        return self.allow_pt2 == "on" or (self.allow_pt2 == "auto" and self.auth == "off")

    @property
    def hf_archive_limits(self) -> HFArchiveLimits:
        unpacked = self.hf_max_unpacked_bytes or 2 * self.max_upload_bytes
        return HFArchiveLimits(
            max_members=self.hf_max_archive_members,
            max_member_bytes=self.hf_max_member_bytes or unpacked,
            max_unpacked_bytes=unpacked,
        )

    @property
    def job_memory_limit(self) -> int:
        return self.max_job_memory_bytes or int(0.8 * machine_memory_bytes())

    @property
    def model_parameter_limit(self) -> int:
        return self.max_model_parameters or self.job_memory_limit // 16

    @property
    def storage_root(self) -> Path:
        """The storage's folder, when it is not a bucket."""
        return Path(self.storage_url).resolve() if self.storage_url else (self.home / "storage").resolve()

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url and self.storage_url.startswith(S3_SCHEME):
            return self.storage_url
        return str(self.storage_root)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_problems(error: ValidationError) -> str:
    """What is wrong with the environment's settings, by variable, for a person to fix."""
    return "; ".join(
        f"DISTILL_{'_'.join(map(str, problem['loc'])).upper()}={problem['input']!r}: "
        + problem["msg"].removeprefix("Value error, ")
        for problem in error.errors()
    )
