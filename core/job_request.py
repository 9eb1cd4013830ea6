"""The job request, `POST /v1/jobs`'s body, and the job a worker runs for it.

A request names its files by id and gives either the student's architecture or how to derive it; the
request rules (`core.request_rules`) resolve it against its files into a request with every default and
derived field filled in, which is what is stored and what `engine_job` turns into the engine's job.
"""

from typing import Any, Literal

from pydantic import Field

from core.gates import Gate
from engine.plan.specs import (
    ArchitectureSpec,
    DistillationConfig,
    EngineJob,
    LoraConfig,
    Spec,
    TeacherFormat,
    TeacherSource,
    TeacherWeight,
    TextOptions,
    TrainingConfig,
)


class TeacherRef(Spec):
    file_id: str = Field(max_length=64)
    format: TeacherFormat | None = Field(
        default=None, description="Default: the format detected when the file was uploaded."
    )
    architecture: ArchitectureSpec | None = Field(
        default=None,
        description="Required for `safetensors` (weights only); a `pt2` or `onnx` program carries its own.",
    )
    weight: TeacherWeight = Field(default=1.0, description="Share in a teacher ensemble (`teachers`).")


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
        default=None,
        description="The student's model spec; filled in from `derive` or `hf` when one of those is given.",
    )
    derive: StudentDerivation | None = Field(
        default=None, description="Design the student from the (first) teacher's architecture instead."
    )
    hf: dict[str, Any] | None = Field(
        default=None,
        description="A transformers student, given by its config as `config.json` would hold it: "
        '`model_type` and the fields to set (e.g. `{"model_type": "bert", "num_hidden_layers": 3}`; '
        "the rest take transformers' defaults). Its labels (`num_labels`, `id2label`, `label2id`), its "
        "text length or image size and normalisation are the (first) teacher's, an `hf` teacher. The "
        "resolved request holds it as `architecture` (family `hf`).",
    )
    lora: LoraConfig | None = Field(
        default=None,
        description="A causal language model student trained as a LoRA student (peft): its initial weights, "
        "those of `derive` with init `teacher` (depth 1 and width 1: a copy of the teacher), stay frozen and "
        "only low-rank adapters on its decoder's linear layers train; they are merged into plain weights "
        "for `student.hf.zip`, and kept as peft's adapter folder in `student.lora.zip`.",
    )


class DatasetRef(TextOptions):
    train_file_id: str = Field(max_length=64)
    validation_file_id: str | None = Field(
        default=None, max_length=64, description="Default: a seeded hold-out of the training file."
    )
    tokenizer_file_id: str | None = Field(
        default=None,
        max_length=64,
        description="A `tokenizer` file (Hugging Face `tokenizers` JSON, padding id 0) that tokenizes JSON "
        "Lines datasets for a transformer student: required when a dataset file is `jsonl`. A transformers "
        "(`hf`) student's text is tokenized by the `hf` teacher folder's own tokenizer instead.",
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="Text for a transformers (`hf`) student: the tokens per sample, longer text truncated (a "
        "causal language model's: the tokens of each block it learns from). Default: 128, or fewer where a "
        "model places fewer.",
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
    export: list[Literal["onnx", "int8"]] = Field(
        default=["onnx"],
        description="Extra artifacts. `onnx`: `student.onnx` (any batch size), run with ONNX Runtime on the "
        "validation set against the PyTorch student (`metrics.onnx`: accuracy, agreement, largest "
        "difference). `int8`: `student.int8.pt2` (int8 weights; `metrics.int8`) and, with `onnx`, "
        "`student.int8.onnx` quantized by ONNX Runtime (`metrics.onnx.int8`). `[]` for neither.",
    )
    gates: list[Gate] = Field(
        default=[],
        max_length=32,
        description="Quality gates on the final metrics, evaluated when the job ends: each gate's measured "
        "value and pass/fail go into `metrics.gates` and an event. A job that fails a gate still succeeds, "
        "with its artifacts; `distill` exits 4.",
    )
    name: str | None = Field(default=None, max_length=255)
    resume_from: str | None = Field(
        default=None,
        max_length=64,
        description="The id of an earlier job of yours that ended `failed` with `time_limit_exceeded`: this "
        "job goes on from the checkpoint it kept instead of from the start. The request must be that job's, "
        "but for `training.max_seconds` (give it more), `gates`, `name` and `resume_from`; the checkpoint "
        "passes to this job once it saves one of its own.",
    )

    def teacher_refs(self) -> list[tuple[str, TeacherRef]]:
        """Each teacher with the request field it came from."""
        if self.teachers is not None:
            return [(f"teachers.{i}", teacher) for i, teacher in enumerate(self.teachers)]
        return [("teacher", self.teacher)] if self.teacher is not None else []

    def teacher_fields(self) -> list[str]:
        return [field for field, _teacher in self.teacher_refs()]


def engine_job(request: JobCreate) -> EngineJob:
    """What the engine needs of a resolved request, besides the files themselves."""
    return EngineJob(
        teachers=teacher_sources(request),
        student_architecture=request.student.architecture,
        student_init=request.student.derive.init if request.student.derive else "random",
        student_lora=request.student.lora,
        export=request.export,
        distillation=request.distillation,
        training=request.training,
        text=TextOptions.model_validate(request.dataset.model_dump(include=set(TextOptions.model_fields))),
    )


def teacher_sources(request: JobCreate) -> list[TeacherSource]:
    return [
        TeacherSource(format=t.format, architecture=t.architecture, weight=t.weight)
        for _field, t in request.teacher_refs()
    ]
