"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from typing import Generic, Literal, TypeVar

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from core.job_request import JobCreate
from core.lifecycle import Status
from engine.plan.hf_archive import HFFolder
from engine.plan.hf_models import HFTask

Purpose = Literal["teacher", "dataset", "tokenizer"]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


# Files


# `POST /v1/files`'s multipart form, for the OpenAPI document only: the route reads the body itself as it
# streams (`service/upload_stream.py`). Titled as FastAPI titled the form it parsed before; no docstring,
# which would become the schema's description.
class UploadForm(BaseModel):
    model_config = ConfigDict(title="Body_upload_file_v1_files_post")
    file: UploadFile = Field(description="The file's bytes.")
    purpose: Purpose


LISTED_LABELS = 100


class HFModel(BaseModel):
    """An `hf` teacher's model: what its archived `save_pretrained` folder holds, read at upload."""

    model_type: str = Field(
        description="The config's `model_type`: the transformers family (`bert`, `vit`, ...)."
    )
    task: HFTask = Field(
        description="`text`: a sequence classifier over token ids; `image`: an image classifier over pixels; "
        "`causal-lm`: a causal language model over token ids."
    )
    parameters: int = Field(
        description="Elements of every tensor of its safetensors weights (buffers such as batch-norm "
        "statistics included), counted from their headers."
    )
    num_labels: int = Field(description="The classifier's labels (a causal language model has none).")
    labels: list[str] = Field(
        description=f"The labels by class id (the config's `id2label`), the first {LISTED_LABELS} of them."
    )
    tokenizer: bool = Field(description="Whether the folder holds a tokenizer's files.")
    preprocessor: bool = Field(description="Whether the folder holds an image preprocessor's config.")

    @classmethod
    def of(cls, folder: HFFolder) -> "HFModel":
        labels = folder.labels
        return cls(
            model_type=folder.model_type,
            task=folder.task,
            parameters=folder.parameters,
            num_labels=len(labels),
            labels=labels[:LISTED_LABELS],
            tokenizer=bool(folder.tokenizer_files),
            preprocessor=folder.preprocessor is not None,
        )


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    purpose: Purpose
    filename: str
    bytes: int
    sha256: str
    format: str = Field(
        description=(
            "Detected on upload: `safetensors`, `onnx`, `pt2` or `hf` (teachers: `hf` is a .zip, .tar or "
            "`.tar.gz` of a transformers `save_pretrained` folder), `npz`, `jsonl` or `parquet` (datasets), "
            "`json` (tokenizers)."
        )
    )
    created_at: int
    model: HFModel | None = Field(default=None, description="An `hf` teacher's model (others: null).")

    @classmethod
    def of(cls, row) -> "FileObject":
        """The body of a file's row (a `File`, or a row of its columns, `details` among them)."""
        body = cls.model_validate(row, from_attributes=True)
        if row.format != "hf":  # a dataset's details are its records' shape
            return body
        return body.model_copy(update={"model": HFModel.of(HFFolder.model_validate(row.details))})


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True


# Jobs


class Progress(BaseModel):
    epoch: int = 0
    epochs: int
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    eta_seconds: float | None = None


class Latency(BaseModel):
    batch_1: float = Field(description="Milliseconds per sample, one sample at a time.")
    batch_64: float = Field(description="Milliseconds per sample, in batches of 64.")


class ModelMetrics(BaseModel):
    accuracy: float | None = Field(
        description="On the validation labels (null without labels); a causal language model's: next-token "
        "accuracy."
    )
    perplexity: float | None = Field(
        default=None,
        description="A causal language model's: exp of its mean next-token cross-entropy on the validation "
        "tokens (a classifier's: null).",
    )
    parameters: int
    latency_ms: Latency | None = Field(default=None, description="On the worker's device (`latency_device`).")


class Int8Metrics(BaseModel):
    accuracy: float | None
    latency_ms: Latency | None = None
    agreement: float = Field(description="Top-1 agreement with the float student.")
    bytes: int = Field(description="Size of `student.int8.pt2`.")
    float_bytes: int = Field(description="Size of `student.pt2`.")


class OnnxModelMetrics(BaseModel):
    accuracy: float | None
    agreement: float = Field(description="Top-1 agreement with the PyTorch student.")
    max_abs_difference: float = Field(description="Largest difference from the PyTorch student's logits.")
    bytes: int
    latency_ms: Latency | None = Field(default=None, description="Under ONNX Runtime, on the worker's CPU.")


class OnnxMetrics(OnnxModelMetrics):
    """`student.onnx` run with ONNX Runtime on the validation set."""

    int8: OnnxModelMetrics | None = Field(default=None, description="`student.int8.onnx`, with `int8`.")


class CandidateMetrics(BaseModel):
    name: str = Field(description="`student`, `peer1`, …, or `generation1`, …")
    family: str
    parameters: int
    accuracy: float | None
    agreement: float = Field(description="Top-1 agreement with the teacher(s).")
    exported: bool = Field(description="The best on the validation set is the job's student.")


class Trial(BaseModel):
    trial: int = Field(description="Its number, in the order the trials ran (`trial<n>_*` series).")
    rung: int = Field(description="Its rung of the successive halving, from 1.")
    epochs: int = Field(description="Epochs it trained, on the run's own schedule stopped there.")
    temperature: float | None = Field(default=None, description="Where searched.")
    alpha: float | None = Field(default=None, description="Where searched.")
    learning_rate: float | None = Field(default=None, description="Where searched.")
    soft_loss: str | None = Field(default=None, description="Where searched.")
    validation_accuracy: float


class SearchResult(BaseModel):
    temperature: float = Field(description="The chosen temperature (the job's own where not searched).")
    alpha: float = Field(description="The chosen alpha (the job's own where not searched).")
    learning_rate: float = Field(description="The chosen learning rate (the job's own where not searched).")
    soft_loss: str = Field(description="The chosen soft loss (the job's own where not searched).")
    trials: list[Trial]
    budget_epochs: int = Field(description="Epochs the trials could train together.")
    spent_epochs: int = Field(
        description="Epochs they trained, less those of the trial the student went on from."
    )
    continued_trial: int | None = Field(
        description="The trial the student went on from (the standard method), rather than training anew."
    )
    p_value: float | None = Field(
        description="McNemar's test of the chosen trial against the runner-up of the last rung, on the "
        "validation samples: the chance of a split this uneven between two equally good students."
    )
    separated: bool | None = Field(
        description="Whether the chosen trial is better than the runner-up beyond chance (p < 0.05); "
        "false means the choice between them was a coin flip (an event says so). None: one candidate."
    )


class GenerationSample(BaseModel):
    prompt: str = Field(description="The start of a validation sample.")
    teacher: str = Field(description="What the teacher wrote after it.")
    student: str = Field(description="What the student wrote after it.")


class GateResult(BaseModel):
    metric: str
    op: str
    threshold: float
    value: float | None = Field(description="The metric as measured; null when it was not (the gate fails).")
    passed: bool


class TeacherCacheMetrics(BaseModel):
    status: Literal["hit", "miss", "mixed", "off", "bypassed"] = Field(
        description="`hit`: every teacher output was read from the cache; `miss`: computed once in this job "
        "(`mixed`: some of each); `off`: `distillation.teacher_cache` is off; `bypassed`: not cacheable "
        "(see `reason`)."
    )
    reason: str | None = Field(default=None, description="Why the teachers ran on every batch.")
    entries: int | None = Field(default=None, description="Tables read: one per teacher and dataset.")
    bytes: int | None = Field(default=None, description="Their size.")
    seconds: float | None = Field(
        default=None, description="Spent computing the missing ones and opening the rest."
    )
    saved_seconds: float | None = Field(
        default=None,
        description="About what the teachers would have spent without the cache (a pass over the training "
        "set per epoch, one over the validation set), less `seconds`.",
    )
    not_kept: str | None = Field(
        default=None, description="Why a table computed here was not kept for later jobs."
    )


class AloneMetrics(BaseModel):
    perplexity: float = Field(description="Validation perplexity.")
    accuracy: float = Field(description="Validation next-token accuracy.")


class PeakMemory(BaseModel):
    process_bytes: int | None = Field(
        description="The job's process's most resident memory, from the job's start (Linux's VmHWM, reset as "
        "the job starts); null where the system does not say."
    )
    cuda_bytes: int | None = Field(description="On CUDA, the most its tensors took on the device; else null.")


class LoraMetrics(BaseModel):
    r: int = Field(description="The adapters' rank.")
    alpha: float = Field(description="Their scale is alpha / r.")
    dropout: float
    target_modules: list[str] = Field(
        description="The ends of the module names adapted (peft's choice where the request gave none)."
    )
    trainable_parameters: int = Field(description="The adapters' parameters: the only ones trained.")
    parameters: int = Field(description="The student's, with its adapters.")
    base: Literal["teacher", "derived"] = Field(
        description="What `student.lora.zip` applies to: `teacher`, the teacher itself (the student started "
        "as a copy of it); `derived`, the derived student's initial weights, which no artifact holds."
    )
    merge_max_abs_difference: float = Field(
        description="The largest difference between the logits of the merged student (`student.hf.zip`) and "
        "the adapted one, on the first validation blocks: rounding."
    )


class JobMetrics(BaseModel):
    task: Literal["causal-lm"] | None = Field(
        default=None,
        description="`causal-lm`: a causal language model's metrics, its accuracy and agreement next-token "
        "ones; null: a classifier's.",
    )
    teacher: ModelMetrics
    student: ModelMetrics
    agreement: float = Field(
        description="Top-1 agreement with the teacher(s): a causal language model's on each next token."
    )
    kl_to_teacher: float | None = Field(
        default=None,
        description="A causal language model's mean token KL(teacher || student) at temperature 1, in nats.",
    )
    tokens: int | None = Field(
        default=None, description="A causal language model's validation tokens, over which it was measured."
    )
    samples: list[GenerationSample] | None = Field(
        default=None,
        description="A causal language model's: a few generations of the teacher and the student.",
    )
    alone: AloneMetrics | None = Field(
        default=None,
        description="A causal language model's reference (`distillation.alone_reference`): the same student "
        "trained on the next-token cross-entropy alone.",
    )
    gap_closed: float | None = Field(
        default=None,
        description="With `alone_reference`: (alone - student) / (alone - teacher) validation perplexity, "
        "the share of the gap the distillation closed; null where the reference is as good as the teacher.",
    )
    accuracy_retention: float | None
    compression: float
    int8: Int8Metrics | None = Field(default=None, description="When `export` asked for `int8`.")
    onnx: OnnxMetrics | None = Field(default=None, description="When `export` asked for `onnx`.")
    lora: LoraMetrics | None = Field(default=None, description="A LoRA student's (`student.lora`) adapters.")
    speedup: Latency | None = Field(
        default=None, description="Teacher latency / student latency, per batch size."
    )
    latency_device: str | None = Field(default=None, description="Where the latencies were measured.")
    students: list[CandidateMetrics] | None = Field(default=None, description="`mutual`: every student.")
    generations: list[CandidateMetrics] | None = Field(
        default=None, description="`born_again`: every generation."
    )
    search: SearchResult | None = Field(default=None, description="The `auto` search: its trials and choice.")
    gates: list[GateResult] | None = Field(default=None, description="The request's `gates`, evaluated.")
    teacher_cache: TeacherCacheMetrics | None = Field(
        default=None, description="Where the teachers' outputs came from (`distillation.teacher_cache`)."
    )
    peak_memory: PeakMemory | None = Field(
        default=None, description="What the job's training process held at its peak (rank 0's, over several)."
    )


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
    status: Status
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
    storage: str = Field(description="`ok`, or what is wrong with the storage (a bucket missing or refused).")


# Where things are (`GET /`)


class ServiceLinks(BaseModel):
    dashboard: str = Field(description="Pages for people: jobs, their progress and results (no key needed).")
    docs: str = Field(description="This API's interactive documentation.")
    openapi: str = Field(description="The OpenAPI document.")
    files: str = Field(description="The `/v1` API's files: uploads (teachers, datasets, tokenizers).")
    jobs: str = Field(description="The `/v1` API's distillation jobs.")
    metrics: str = Field(description="Prometheus metrics; with auth on, for the operator's token only.")
    healthz: str = Field(description="Liveness.")
    readyz: str = Field(description="Readiness: the database, the broker and the storage.")


class ServiceIndex(BaseModel):
    object: Literal["index"] = "index"
    name: str
    version: str
    links: ServiceLinks = Field(description="Paths on this server, for an API client to start from.")
