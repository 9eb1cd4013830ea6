"""The files a job over several devices is run by, in the job's folder: `launch.json`, which the task
writes for the ranks, and each rank's folder `rank-<n>/`, where rank 0 writes `result.json` when the job
succeeded and a rank that raised writes `failure.json`, for the task to read back."""

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from core.config import Settings
from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled, JobFailed
from engine.plan.specs import JobFiles

LAUNCH_FILE = "launch.json"
RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
CANCELLED = "cancelled"  # a failure's code for JobCancelled


@dataclass(frozen=True)
class Launch:
    """What every rank needs to run its part of the job: the worker's settings (secrets included: the
    job's folder is readable by this user alone), the job and its files, already local, and its deadline
    (a `time.time()`)."""

    settings: Settings
    job_id: str
    files: JobFiles
    file_ids: list[str]
    deadline: float

    def write(self, out_dir: Path) -> Path:
        values = {
            "settings": _settings_values(self.settings),
            "job_id": self.job_id,
            "files": _files_values(self.files),
            "file_ids": self.file_ids,
            "deadline": self.deadline,
        }
        path = out_dir / LAUNCH_FILE
        path.write_text(json.dumps(values))
        return path

    @classmethod
    def read(cls, path: Path) -> "Launch":
        values = json.loads(path.read_text())
        return cls(
            settings=Settings(**values["settings"]),
            job_id=values["job_id"],
            files=_job_files(values["files"]),
            file_ids=values["file_ids"],
            deadline=values["deadline"],
        )


def _settings_values(settings: Settings) -> dict:
    secrets = {name: value.get_secret_value() for name, value in settings if isinstance(value, SecretStr)}
    return settings.model_dump(mode="json") | secrets


def _files_values(files: JobFiles) -> dict:
    return {
        "teachers": [str(path) for path in files.teachers],
        "train": str(files.train),
        "validation": _optional_name(files.validation),
        "tokenizer": _optional_name(files.tokenizer),
        "digests": {str(path): sha256 for path, sha256 in files.digests.items()},
    }


def _job_files(values: dict) -> JobFiles:
    return JobFiles(
        teachers=[Path(name) for name in values["teachers"]],
        train=Path(values["train"]),
        validation=_optional_path(values["validation"]),
        tokenizer=_optional_path(values["tokenizer"]),
        digests={Path(name): sha256 for name, sha256 in values["digests"].items()},
    )


def _optional_name(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _optional_path(name: str | None) -> Path | None:
    return None if name is None else Path(name)


def rank_folder(out_dir: Path, rank: int) -> Path:
    return out_dir / f"rank-{rank}"


def write_result(folder: Path, result: DistillResult) -> None:
    artifacts = {name: str(path) for name, path in result.artifacts.items()}
    values = {"metrics": result.metrics, "series": result.series, "artifacts": artifacts}
    (folder / RESULT_FILE).write_text(json.dumps(values))


def read_result(folder: Path) -> DistillResult | None:
    """The result `write_result` left in `folder`, if any."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    artifacts = {name: Path(path) for name, path in values["artifacts"].items()}
    return DistillResult(metrics=values["metrics"], series=values["series"], artifacts=artifacts)


class RankFailed(Exception):
    """A rank raised an error other than a `JobFailed` or `JobCancelled`; its traceback is in the log."""


@dataclass(frozen=True)
class Failure:
    """What ended a rank, as the task raises it again."""

    code: str  # a `JobFailed`'s code, `CANCELLED`, or `RankFailed`'s name
    message: str

    @classmethod
    def of(cls, error: BaseException, rank: int) -> "Failure":
        if isinstance(error, JobCancelled):
            return cls(CANCELLED, str(error))
        if isinstance(error, JobFailed):
            return cls(error.code, error.message)
        return cls(RankFailed.__name__, f"rank {rank}: {type(error).__name__}: {error}")

    def exception(self) -> Exception:
        """The `JobCancelled`, `JobFailed` or `RankFailed` the rank raised."""
        if self.code == CANCELLED:
            return JobCancelled(self.message)
        if self.code == RankFailed.__name__:
            return RankFailed(self.message)
        return JobFailed(self.code, self.message)

    def write(self, folder: Path) -> None:
        (folder / FAILURE_FILE).write_text(json.dumps({"code": self.code, "message": self.message}))


def lowest_rank_failure(out_dir: Path) -> Failure | None:
    """The failure of the lowest rank that wrote one, if any."""
    paths = sorted(out_dir.glob(f"rank-*/{FAILURE_FILE}"), key=lambda path: _rank_number(path.parent))
    return Failure(**json.loads(paths[0].read_text())) if paths else None


def _rank_number(folder: Path) -> int:
    return int(folder.name.removeprefix("rank-"))
