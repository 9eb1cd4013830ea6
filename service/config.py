"""Settings, all from `DISTILL_*` environment variables (see the README's reference)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    home: Path = Field(default=Path("./var"), description="Where the embedded default keeps everything.")
    database_url: str | None = Field(default=None, description="Default: SQLite under `home`.")
    broker_url: str | None = Field(default=None, description="Default: a filesystem broker under `home`.")
    storage_url: str | None = Field(default=None, description="A local path. Default: `home`/storage.")
    auth: Literal["off", "on"] = "off"
    allow_unauthenticated_bind: bool = Field(
        default=False,
        description="Serve a non-loopback address with auth off (a container published on loopback).",
    )
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0)
    task_queue: str = "gpu"
    progress_interval_seconds: float = Field(
        default=1.0, ge=0.0, description="Least time between progress writes."
    )
    cancel_check_seconds: float = Field(default=0.25, ge=0.0, description="Least time between cancel checks.")

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
    def storage_root(self) -> Path:
        return Path(self.storage_url).resolve() if self.storage_url else (self.home / "storage").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
