"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from engine.specs import ArchitectureSpec, DistillationConfig, Spec, TrainingConfig

Purpose = Literal["teacher", "dataset", "tokenizer"]
JobStatus = Literal["queued", "validating", "running", "succeeded", "failed", "cancelling", "cancelled"]
ACTIVE_STATUSES = ("queued", "validating", "running", "cancelling")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


# Files


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    purpose: Purpose
    filename: str
    bytes: int
    sha256: str
    format: str = Field(description="Detected on upload: `safetensors`, `pt2`, `npz` or `json`.")
    created_at: int


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True


# Job requests


class TeacherRef(Spec):
    file_id: str = Field(max_length=64)
    format: Literal["safetensors", "pt2"] | None = Field(
        default=None, description="Default: the format detected when the file was uploaded."
    )
    architecture: ArchitectureSpec | None = Field(
        default=None,
        description="Required for `safetensors` (weights only); a `pt2` archive carries its own.",
    )
    weight: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="Share in a teacher ensemble (`teachers`)."
    )


class StudentDerivation(Spec):
    """A student of the teacher's family with fewer and narrower layers (DistilBERT-style)."""

    depth: float = Field(default=0.5, gt=0.0, le=1.0, description="Share of the teacher's layers kept.")
    width: float = Field(default=1.0, gt=0.0, le=1.0, description="Share of each layer's width kept.")
    init: Literal["teacher", "random"] = Field(
        default="teacher",
        description="`teacher`: each student layer starts as a copy of a teacher layer (every second one at "
        "depth 0.5), narrower tensors as the teacher's leading slice.",
    )


class StudentRef(Spec):
    architecture: ArchitectureSpec | None = Field(
        default=None, description="The student's model spec; filled in from `derive` when that is given."
    )
    derive: StudentDerivation | None = Field(
        default=None, description="Design the student from the (first) teacher's architecture instead."
    )


class DatasetRef(Spec):
    train_file_id: str = Field(max_length=64)
    validation_file_id: str | None = Field(
        default=None, max_length=64, description="Default: a seeded hold-out of the training file."
    )
    tokenizer_file_id: str | None = Field(
        default=None,
        max_length=64,
        description="A `tokenizer` file (Hugging Face `tokenizers` JSON, padding id 0) that tokenizes JSON "
        "Lines datasets for a transformer student: required when a dataset file is `jsonl`.",
    )


class JobCreate(Spec):
    teacher: TeacherRef | None = Field(
        default=None, description="The teacher; or give several as `teachers`."
    )
    teachers: list[TeacherRef] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="Several teachers (multi-teacher distillation), combined by `distillation.ensemble`.",
    )
    student: StudentRef
    dataset: DatasetRef
    distillation: DistillationConfig = DistillationConfig()
    training: TrainingConfig = TrainingConfig()
    export: list[Literal["int8"]] = Field(
        default=[],
        description="Extra artifacts: `int8` adds `student.int8.pt2` (int8 weights) with its own measured "
        "accuracy and size in `metrics.int8`.",
    )
    name: str | None = Field(default=None, max_length=255)

    def teacher_refs(self) -> list[tuple[str, TeacherRef]]:
        """Each teacher with the request field it came from."""
        if self.teachers is not None:
            return [(f"teachers.{i}", teacher) for i, teacher in enumerate(self.teachers)]
        return [("teacher", self.teacher)] if self.teacher is not None else []


# Job resources


class Progress(BaseModel):
    epoch: int = 0
    epochs: int
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    eta_seconds: float | None = None


class ModelMetrics(BaseModel):
    accuracy: float | None
    parameters: int


class Int8Metrics(BaseModel):
    accuracy: float | None
    agreement: float = Field(description="Top-1 agreement with the float student.")
    bytes: int = Field(description="Size of `student.int8.pt2`.")
    float_bytes: int = Field(description="Size of `student.pt2`.")


class CandidateMetrics(BaseModel):
    name: str = Field(description="`student`, `peer1`, …, or `generation1`, …")
    family: str
    parameters: int
    accuracy: float | None
    agreement: float = Field(description="Top-1 agreement with the teacher(s).")
    exported: bool = Field(description="The best on the validation set is the job's student.")


class Trial(BaseModel):
    temperature: float
    alpha: float
    validation_accuracy: float


class SearchResult(BaseModel):
    temperature: float = Field(description="The chosen temperature.")
    alpha: float = Field(description="The chosen alpha.")
    trials: list[Trial]


class JobMetrics(BaseModel):
    teacher: ModelMetrics
    student: ModelMetrics
    agreement: float
    accuracy_retention: float | None
    compression: float
    int8: Int8Metrics | None = Field(default=None, description="When `export` asked for `int8`.")
    students: list[CandidateMetrics] | None = Field(default=None, description="`mutual`: every student.")
    generations: list[CandidateMetrics] | None = Field(
        default=None, description="`born_again`: every generation."
    )
    search: SearchResult | None = Field(default=None, description="`auto` temperature or alpha: the trials.")


class JobError(BaseModel):
    code: str
    message: str


class ArtifactRef(BaseModel):
    name: str
    bytes: int
    sha256: str


class ArtifactObject(ArtifactRef):
    content_type: str


class JobObject(BaseModel):
    id: str
    object: Literal["distillation.job"] = "distillation.job"
    name: str | None
    status: JobStatus
    created_at: int
    started_at: int | None
    finished_at: int | None
    request: JobCreate
    progress: Progress
    metrics: JobMetrics | None = Field(description="Set when the job has succeeded.")
    error: JobError | None
    artifacts: list[ArtifactRef]


class EventObject(BaseModel):
    id: str
    object: Literal["job.event"] = "job.event"
    created_at: int
    level: Literal["info", "warning", "error"]
    message: str


class MetricPoint(BaseModel):
    step: int
    epoch: int
    name: str
    value: float | None


class MetricList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MetricPoint]


class HealthStatus(BaseModel):
    status: Literal["ok"]


class ReadyStatus(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str
    broker: str
