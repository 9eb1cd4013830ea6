"""The rules a job request must meet, in one place: `resolve_job` turns a submitted request and its
files into the resolved request that is stored and run, or refuses it naming the field at fault.

The rules about files (each named file exists, has the right purpose, a teacher's format, which data a
student reads) live here; the rules about the job itself (feature pairs, classes, methods, TinyBERT) are
the engine's own (`engine.plan.rules`), which the engine applies again before it trains.
"""

from collections.abc import Callable
from dataclasses import dataclass

from core.config import Settings
from core.errors import RequestError, not_found, unprocessable
from core.gates import ALONE_REFERENCE_METRICS, LANGUAGE_MODEL_METRICS
from core.hf_sizes import Model, measured
from core.job_bounds import TeacherFile, check_bounds
from core.job_request import JobCreate, StudentRef, TeacherRef, engine_job, teacher_sources
from core.models import File, Job
from engine.plan.design import derive_spec
from engine.plan.errors import TIME_LIMIT_EXCEEDED, JobFailed
from engine.plan.hf_design import SPEC_KEYS, TASKS_IN_WORDS, pairing_problems, student_from_config
from engine.plan.hf_inputs import DEFAULT_TEXT_LENGTH, folder_spec
from engine.plan.lm_records import SHAPE_NAMES, SHAPES, ChatRecord, PromptRecord
from engine.plan.rules import check_job, initialising_teacher_architecture
from engine.plan.specs import ArchitectureSpec, HFSpec, is_causal_lm, reads_token_ids

FileLookup = Callable[[str], File | None]  # a file of the caller's tenant by id, or None
# What a job may change from the one it resumes from (`resume_from`): nothing it trains.
NOT_TRAINED = {"name": True, "gates": True, "resume_from": True, "training": {"max_seconds"}}
# By student family (an `hf` student's by its task); every other family: npz.
DATASET_FORMATS = {
    "transformer": ("npz", "jsonl"),
    "hf text": ("npz", "jsonl", "parquet"),
    "hf image": ("npz", "parquet"),
    "hf causal-lm": ("jsonl", "parquet"),
}
LM_READS = (
    "a causal language model learns from text records (`text`, `prompt` and `completion`, or chat "
    "`messages`), which the teacher folder's tokenizer tokenizes"
)
# A dataset file's records (`File.details["records"]`) that only a causal language model learns from: their
# fields, in words.
LM_ONLY_RECORDS = {SHAPE_NAMES[shape]: SHAPES[shape][0] for shape in (PromptRecord, ChatRecord)}
MESSAGES = SHAPE_NAMES[ChatRecord]
# The chat template beside tokenizer_config.json (transformers 4.43 and later), which AutoTokenizer reads as
# it reads the config's `chat_template` (a processor's chat_template.json it does not).
CHAT_TEMPLATE_FILE = "chat_template.jinja"


@dataclass(frozen=True)
class ResolvedJob:
    request: JobCreate  # every default and derived field filled in
    file_roles: dict[str, str]  # file id -> the role it plays (teacher, train, validation, tokenizer)


def resolve_job(request: JobCreate, find_file: FileLookup, settings: Settings) -> ResolvedJob:
    """The request with each teacher's format and the student's architecture filled in (the submitted
    request is not changed), or `RequestError` naming the field."""
    if (request.teacher is None) == (request.teachers is None):
        raise unprocessable(
            "invalid_request",
            "Give the teacher as `teacher`, or several as `teachers`: exactly one of them.",
            param="teacher",
        )
    roles: dict[str, str] = {}
    teachers, teacher_files, teacher_rows = [], [], []
    for field, teacher in request.teacher_refs():
        file = _named_file(find_file, teacher.file_id, f"{field}.file_id", "teacher")
        teacher_rows.append(file)
        teachers.append(_resolved_teacher(settings, field, teacher, file))
        teacher_files.append(TeacherFile(field, file.bytes))
        roles.setdefault(file.id, "teacher")
    datasets = _dataset_files(request, find_file, roles)
    resolved = _with_teachers(request, teachers)
    resolved = resolved.model_copy(update={"student": _designed_student(resolved)})
    resolved = _with_hf_peers(resolved)
    resolved = _with_counted_models(resolved)
    resolved = _with_transformers_training(resolved)
    resolved = _with_language_model_defaults(resolved)
    resolved = _with_time_bound(resolved, settings)
    _check_dataset_formats(resolved, {role: file.format for role, file in datasets.items()})
    _check_dataset_records(resolved, datasets)
    _check_tokenizer(resolved, {role: file.format for role, file in datasets.items()}, teacher_rows)
    _check_chat_template(resolved, datasets, teacher_rows[0])
    _check_gates(resolved)
    job = engine_job(resolved)
    try:
        check_job(job, resolved.teacher_fields())
    except JobFailed as error:
        raise _refused(error) from None
    check_bounds(
        job,
        settings,
        teachers=teacher_files,
        train_samples=datasets["train"].samples,
        dataset_bytes=sum(file.bytes for file in datasets.values()),
    )
    return ResolvedJob(resolved, roles)


def check_resumable(request: JobCreate, earlier: Job | None, *, checkpoint_kept: bool) -> None:
    """A job that goes on from `earlier`'s checkpoint (`resume_from`): a job of the tenant's that ran
    out of time and still keeps its checkpoint, with the same request but for what it does not train."""
    if earlier is None:
        raise not_found("job", request.resume_from, "resume_from")
    code = (earlier.error or {}).get("code")
    if code != TIME_LIMIT_EXCEEDED:
        ended = f"{earlier.status} ({code})" if code else earlier.status
        raise unprocessable(
            "not_resumable",
            f"Job {earlier.id} is {ended}: only a job that ran out of time (`time_limit_exceeded`) keeps a "
            "checkpoint to go on from. Submit without `resume_from`.",
            param="resume_from",
        )
    if not checkpoint_kept:
        raise unprocessable(
            "not_resumable",
            f"Job {earlier.id} keeps no checkpoint: it saved none before its time ran out, or a job that "
            "resumed from it has saved its own (resume from that one). Submit without `resume_from`.",
            param="resume_from",
        )
    ours = request.model_dump(mode="json", exclude=NOT_TRAINED)
    theirs = JobCreate.model_validate(earlier.request).model_dump(mode="json", exclude=NOT_TRAINED)
    field = _first_difference(ours, theirs)
    if field is not None:
        raise unprocessable(
            "not_resumable",
            f"`{field}` differs from job {earlier.id}'s: a job goes on from another's checkpoint only with "
            "the same request, but for `training.max_seconds`, `gates` and `name`.",
            param=field,
        )


def _first_difference(ours: object, theirs: object, path: str = "") -> str | None:
    """The dotted path of the first value that differs between two JSON values, or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = [*ours, *(key for key in theirs if key not in ours)]
        found = (_first_difference(ours.get(k), theirs.get(k), f"{path}{k}.") for k in keys)
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        pairs = enumerate(zip(ours, theirs, strict=True))
        found = (_first_difference(a, b, f"{path}{i}.") for i, (a, b) in pairs)
    else:
        return None if ours == theirs else path.rstrip(".")
    return next((field for field in found if field is not None), None)


def _with_transformers_training(request: JobCreate) -> JobCreate:
    """A transformers student trains, where the request leaves these unset, as transformers fine-tunes one:
    AdamW with weight decay 0.01, a linear warm-up over 6% of the steps (RoBERTa's) and a linear decay, at
    the learning rate of `_transformers_learning_rate`."""
    student = request.student.architecture
    if not isinstance(student, HFSpec):
        return request
    training = request.training
    defaults = {
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "learning_rate": _transformers_learning_rate(request.student, student),
        "lr_schedule": "linear",
        "warmup_epochs": round(0.06 * training.epochs, 3),
    }
    unset = {name: value for name, value in defaults.items() if name not in training.model_fields_set}
    return request.model_copy(update={"training": training.model_copy(update=unset)})


def _with_language_model_defaults(request: JobCreate) -> JobCreate:
    """A causal language model's job, where the request leaves these unset: no pt2 or ONNX programs (the
    student comes as its transformers folder) and its next-token distributions compared at T = 1, as they
    are sampled from (a vocabulary's tail softened at the classifiers' T = 4 would outweigh its head)."""
    if not is_causal_lm(request.student.architecture):
        return request
    distillation = request.distillation
    update = {} if "export" in request.model_fields_set else {"export": []}
    if "temperature" not in distillation.model_fields_set:
        update["distillation"] = distillation.model_copy(update={"temperature": 1.0})
    return request.model_copy(update=update)


def _transformers_learning_rate(given: StudentRef, student: HFSpec) -> float:
    """As measured by `make bench-hf` (3 epochs): 5e-5 for whole layers of the teacher (a 3-layer MiniLM:
    94% of TREC-6 at 5e-5); 2e-4 for the teacher's layers narrowed, less of a start (half as wide: 80% at
    5e-5, 90% at 2e-4); from random weights 2e-4 for text and 1e-3 for images (a MobileNetV2 on MNIST:
    82% at 2e-4, 96% at 1e-3). A LoRA student's adapters: 2e-4, as the LoRA paper's GPT-2 and peft's
    examples train them (their updates start at 0 and stay low-rank)."""
    if given.lora is not None:
        return 2e-4
    derive = given.derive
    if derive is not None and derive.init == "teacher":
        return 5e-5 if derive.width == 1.0 else 2e-4
    return 1e-3 if student.task == "image" else 2e-4


def _with_time_bound(request: JobCreate, settings: Settings) -> JobCreate:
    """The server's bound where the request sets none, so that the stored job says what it may take."""
    if request.training.max_seconds is not None:
        return request
    training = request.training.model_copy(update={"max_seconds": settings.max_job_seconds})
    return request.model_copy(update={"training": training})


def _check_gates(request: JobCreate) -> None:
    for number, gate in enumerate(request.gates):
        if gate.metric == "int8.accuracy" and "int8" not in request.export:
            raise unprocessable(
                "invalid_request",
                'A gate on int8.accuracy needs the int8 student: add "int8" to export.',
                param=f"gates.{number}.metric",
            )
        if gate.metric in ALONE_REFERENCE_METRICS and not request.distillation.alone_reference:
            raise unprocessable(
                "invalid_request",
                f"A gate on {gate.metric} needs the reference trained alone: set "
                "distillation.alone_reference to true.",
                param=f"gates.{number}.metric",
            )
        if gate.metric in LANGUAGE_MODEL_METRICS and not is_causal_lm(request.student.architecture):
            raise unprocessable(
                "invalid_request",
                f"A gate on {gate.metric} needs a causal language model student, which the job measures it "
                f"for; the student is {_student_kind(request.student.architecture)}: gate on its accuracy "
                "or agreement instead.",
                param=f"gates.{number}.metric",
            )


def _refused(error: JobFailed) -> RequestError:
    """A job rule the engine checks, answered as the API's 422."""
    return unprocessable(error.code, error.message, param=error.param)


def _named_file(find_file: FileLookup, file_id: str, param: str, purpose: str) -> File:
    row = find_file(file_id)
    if row is None:
        raise not_found("file", file_id, param)
    if row.purpose != purpose:
        raise unprocessable(
            "wrong_file_purpose",
            f"File {file_id} was uploaded with purpose {row.purpose!r}; this field needs a {purpose!r} file.",
            param=param,
        )
    return row


def _resolved_teacher(settings: Settings, field: str, teacher: TeacherRef, file: File) -> TeacherRef:
    detected_format = file.format
    if teacher.format not in (None, detected_format):
        raise unprocessable(
            "format_mismatch",
            f"{field}.format is {teacher.format!r} but file {teacher.file_id} is a {detected_format!r} file.",
            param=f"{field}.format",
        )
    if detected_format == "pt2" and not settings.pt2_allowed:  # a pt2 file uploaded while they were allowed
        raise pt2_not_allowed(settings, f"{field}.format")
    if detected_format == "safetensors" and teacher.architecture is None:
        raise unprocessable(
            "architecture_required",
            "A safetensors teacher holds weights only: give its `architecture` (a model spec).",
            param=f"{field}.architecture",
        )
    if detected_format != "safetensors" and teacher.architecture is not None:
        raise unprocessable(
            "unexpected_architecture",
            f"A {detected_format} teacher carries its own architecture: remove {field}.architecture.",
            param=f"{field}.architecture",
        )
    architecture = _folder_spec(file) if detected_format == "hf" else teacher.architecture
    return teacher.model_copy(update={"format": detected_format, "architecture": architecture})


def _folder_spec(file: File) -> HFSpec:
    """An `hf` teacher's spec, from what its upload check read of the folder."""
    folder = file.details
    return folder_spec(
        folder["config"],
        parameters=folder["parameters"],
        preprocessor=folder.get("preprocessor"),
        tokenizer_config=folder.get("tokenizer_config"),
    )


def pt2_not_allowed(settings: Settings, param: str) -> RequestError:
    """The one answer to a pt2 teacher where the operator has not said every uploader is trusted."""
    why = (
        "the operator turned them off (DISTILL_ALLOW_PT2=off)"
        if settings.allow_pt2 == "off"
        else "this server has API keys on, so its uploaders are not all trusted (DISTILL_ALLOW_PT2=on "
        "would allow them)"
    )
    return unprocessable(
        "pt2_not_allowed",
        f"pt2 teachers are refused here: loading a torch.export archive can unpickle, which runs code, and "
        f"{why}. Upload the teacher's weights as safetensors and give its architecture in the job instead.",
        param=param,
    )


def _dataset_files(request: JobCreate, find_file: FileLookup, roles: dict[str, str]) -> dict[str, File]:
    """Dataset role (`train`, `validation`) -> its file; records each file's role."""
    files = {}
    for role in ("train", "validation"):
        file_id = getattr(request.dataset, f"{role}_file_id")
        if file_id is not None:
            file = _named_file(find_file, file_id, f"dataset.{role}_file_id", "dataset")
            roles.setdefault(file.id, role)
            files[role] = file
    tokenizer_id = request.dataset.tokenizer_file_id
    if tokenizer_id is not None:
        tokenizer = _named_file(find_file, tokenizer_id, "dataset.tokenizer_file_id", "tokenizer")
        roles.setdefault(tokenizer.id, "tokenizer")
    return files


def _with_teachers(request: JobCreate, teachers: list[TeacherRef]) -> JobCreate:
    if request.teachers is not None:
        return request.model_copy(update={"teachers": teachers})
    return request.model_copy(update={"teacher": teachers[0]})


def _designed_student(request: JobCreate) -> StudentRef:
    """The student with its architecture: as given, or derived from the first teacher's."""
    student = request.student
    if sum(choice is not None for choice in (student.architecture, student.derive, student.hf)) != 1:
        raise unprocessable(
            "invalid_request",
            "Give the student's `architecture`, `derive` to design it from the teacher, or `hf` (a "
            "transformers config): exactly one.",
            param="student.architecture",
        )
    architecture = student.architecture
    if student.derive is not None:
        try:
            architecture = derive_spec(_first_teacher(request), student.derive.depth, student.derive.width)
        except JobFailed as error:  # a transformers model type that cannot be made smaller so
            raise _refused(error) from None
    elif student.hf is not None:
        architecture = _configured_student(_first_teacher(request), student.hf)
    if isinstance(architecture, HFSpec):
        if not isinstance(request.teacher_refs()[0][1].architecture, HFSpec):
            raise unprocessable(
                "incompatible_student",
                "A transformers (`hf`) student takes its labels, and its tokenizer or image processing, from "
                "the first teacher, which must be an `hf` teacher: upload the teacher as a save_pretrained "
                "folder, or give the student another family.",
                param=_student_field(student),
            )
        architecture = _text_length(architecture, request)
        _check_pairing(request, architecture, "The student", _student_field(student))
    else:
        _check_no_hf_teacher(request)
    return student.model_copy(update={"architecture": architecture})


def _check_no_hf_teacher(request: JobCreate) -> None:
    """An `hf` teacher reads the data its own way (text with its folder's tokenizer and padding id, images
    scaled to [0, 1]), which a student of another family does not."""
    for field, teacher in request.teacher_refs():
        if isinstance(teacher.architecture, HFSpec):
            raise unprocessable(
                "incompatible_student",
                f"{field} is a transformers (`hf`) model, which reads the data its own way (text with its "
                "folder's tokenizer, images scaled to [0, 1]) where a student of another family reads it as "
                "its spec says: give the student as student.derive or student.hf, a transformers model.",
                param="student.architecture",
            )


def _first_teacher(request: JobCreate):
    try:
        return initialising_teacher_architecture(teacher_sources(request), request.teacher_fields())
    except JobFailed as error:
        raise _refused(error) from None


def _configured_student(teacher, config: dict) -> HFSpec:
    if not isinstance(teacher, HFSpec):
        raise unprocessable(
            "incompatible_student",
            f"student.hf is a transformers student, which takes its labels and inputs from an `hf` teacher; "
            f"the teacher is a {teacher.family} model: give student.architecture instead.",
            param="student.hf",
        )
    try:
        return student_from_config(teacher, config)
    except ValueError as error:
        raise unprocessable("invalid_model_config", f"student.hf: {error}", param="student.hf") from None


def _text_length(student: HFSpec, request: JobCreate) -> HFSpec:
    """A student of token ids (a text classifier, a causal language model: its blocks) reads
    `dataset.max_length` tokens (default: 128, fewer where a model places fewer)."""
    if student.task == "image":
        return student
    capacities = [student.max_length or DEFAULT_TEXT_LENGTH]
    capacities += [
        teacher.architecture.max_length
        for _field, teacher in request.teacher_refs()
        if teacher.architecture is not None and reads_token_ids(teacher.architecture)
    ]
    length = request.dataset.max_length or min(DEFAULT_TEXT_LENGTH, *capacities)
    return student.model_copy(update={"max_length": length})


def _check_pairing(request: JobCreate, student: HFSpec, who: str, param: str) -> None:
    """A transformers student (or peer: `who`, given by the request's field `param`) and each transformers
    teacher must read the same inputs and labels."""
    for field, teacher in request.teacher_refs():
        if isinstance(teacher.architecture, HFSpec):
            problems = pairing_problems(teacher.architecture, student)
            if problems:
                raise unprocessable(
                    "incompatible_student", f"{who} cannot learn from {field}: {problems[0]}", param=param
                )


def _with_hf_peers(request: JobCreate) -> JobCreate:
    """`mutual` peers that are transformers models, completed as `student.hf` is: the first teacher's labels,
    and its inputs (its tokenizer's vocab_size; its images' size, mean and std) where the peer says nothing
    else, so that a peer exported as the job's student reads and names what the teacher does; a text peer
    reads the student's `max_length` tokens."""
    peers = request.distillation.peers
    if not any(isinstance(peer, HFSpec) for peer in peers):
        return request
    teacher = request.teacher_refs()[0][1].architecture
    completed = [
        _completed_peer(teacher, peer, f"distillation.peers.{number}", request)
        if isinstance(peer, HFSpec)
        else peer
        for number, peer in enumerate(peers)
    ]
    distillation = request.distillation.model_copy(update={"peers": completed})
    return request.model_copy(update={"distillation": distillation})


def _completed_peer(teacher: ArchitectureSpec | None, peer: HFSpec, field: str, request: JobCreate) -> HFSpec:
    if not isinstance(teacher, HFSpec):
        raise unprocessable(
            "incompatible_student",
            f"{field} is a transformers (`hf`) model, which takes its labels, and its tokenizer or image "
            "processing, from the first teacher, which must be an `hf` teacher: upload the teacher as a "
            "save_pretrained folder, or give the peer another family.",
            param=field,
        )
    if peer.num_classes != teacher.num_classes:
        raise unprocessable(
            "incompatible_shapes",
            f"{field} has {peer.num_classes} classes but the teacher {teacher.num_classes}: a peer learns "
            f"the teacher's labels, so set {field}.num_classes to {teacher.num_classes}.",
            param=f"{field}.num_classes",
        )
    who = f"The peer {field}"
    _check_pairing(request, peer, who, field)  # what the request gives: its task, inputs and sizes
    given = {key: getattr(peer, key) for key in SPEC_KEYS if getattr(peer, key) is not None}
    if peer.task != "image":  # it reads the student's token ids
        given["max_length"] = getattr(request.student.architecture, "max_length", None) or peer.max_length
    try:
        completed = student_from_config(teacher, peer.config | given)
    except ValueError as error:
        raise unprocessable("invalid_model_config", f"{field}: {error}", param=field) from None
    _check_pairing(request, completed, who, field)  # and what it took from the teacher
    return completed


def _student_field(student: StudentRef) -> str:
    """The request's field that gave the student."""
    return "student.derive" if student.derive else "student.hf" if student.hf else "student.architecture"


def _with_counted_models(request: JobCreate) -> JobCreate:
    """Every transformers model with its parameters and activations counted (a LoRA student's adapters too),
    for the job's bounds."""
    student, distillation = request.student, request.distillation
    models = [
        Model(teacher.architecture, f"{field}.architecture") for field, teacher in request.teacher_refs()
    ]
    lora = student.lora if is_causal_lm(student.architecture) else None  # else refused by the job's rules
    models.append(Model(student.architecture, _student_field(student), lora))
    models += [Model(peer, f"distillation.peers.{number}") for number, peer in enumerate(distillation.peers)]
    hf = [model for model in models if isinstance(model.spec, HFSpec)]
    counted = iter(measured(hf)) if hf else iter(())
    models = [next(counted) if isinstance(model.spec, HFSpec) else model for model in models]
    teachers = [
        teacher.model_copy(update={"architecture": model.spec})
        for (_field, teacher), model in zip(request.teacher_refs(), models, strict=False)
    ]
    count = len(teachers)
    return _with_teachers(request, teachers).model_copy(
        update={
            "student": student.model_copy(
                update={"architecture": models[count].spec, "lora": models[count].lora or student.lora}
            ),
            "distillation": distillation.model_copy(
                update={"peers": [model.spec for model in models[count + 1 :]]}
            ),
        }
    )


def _check_dataset_formats(request: JobCreate, dataset_formats: dict[str, str]) -> None:
    """A transformer reads token ids (npz, or JSON Lines with a tokenizer), a transformers model its task's
    data (a causal language model text only), every other family features (npz)."""
    student = request.student.architecture
    kind = f"hf {student.task}" if isinstance(student, HFSpec) else student.family
    readable = DATASET_FORMATS.get(kind, ("npz",))
    advice = (
        f"{LM_READS}, never from arrays: write the dataset as JSON Lines or Parquet"
        if kind == "hf causal-lm"
        else "text needs a transformer or a transformers text student"
    )
    for role, file_format in dataset_formats.items():
        if file_format not in readable:
            raise unprocessable(
                "incompatible_dataset",
                f"dataset.{role}_file_id is a {file_format!r} file, which {_student_kind(student)} does not "
                f"read (it reads {' or '.join(readable)}): {advice}.",
                param=f"dataset.{role}_file_id",
            )


def _student_kind(student: ArchitectureSpec) -> str:
    """`a mlp classifier`, `a causal language model (llama)`."""
    if isinstance(student, HFSpec):
        return f"{TASKS_IN_WORDS[student.task]} ({student.model_type})"
    return f"a {student.family} classifier"


def _check_dataset_records(request: JobCreate, datasets: dict[str, File]) -> None:
    """Prompts and completions or conversations train a causal language model, which reads no images. A
    file's records are what its upload check found (nothing for a file uploaded before it recorded them)."""
    student = request.student.architecture
    for role, file in datasets.items():
        records, param = (file.details or {}).get("records"), f"dataset.{role}_file_id"
        if is_causal_lm(student) and records == "image":
            raise unprocessable(
                "incompatible_dataset",
                f"{param} holds images (an `image` column), which {_student_kind(student)} does not read: "
                f"{LM_READS}.",
                param=param,
            )
        if not is_causal_lm(student) and records in LM_ONLY_RECORDS:
            raise unprocessable(
                "incompatible_dataset",
                f"{param} holds {LM_ONLY_RECORDS[records]} records, which train a causal language model (a "
                f"student of an `hf` causal-lm teacher), but the student is {_student_kind(student)}, which "
                f"reads {_classifier_reads(student)}: give it such a dataset, or distil a causal language "
                "model.",
                param=param,
            )


def _classifier_reads(student: ArchitectureSpec) -> str:
    if isinstance(student, HFSpec) and student.task == "image":
        return "images (an `image` column, optionally `label`)"
    return "`text` (optionally `text_pair`) and `label` fields"


def _check_chat_template(request: JobCreate, datasets: dict[str, File], teacher: File) -> None:
    """A causal language model's conversations are rendered with the first teacher folder's chat template."""
    if not is_causal_lm(request.student.architecture) or _has_chat_template(teacher.details or {}):
        return
    for role, file in datasets.items():
        if (file.details or {}).get("records") == MESSAGES:
            raise unprocessable(
                "chat_template_missing",
                f"dataset.{role}_file_id holds chat `messages`, which are rendered with the tokenizer's chat "
                "template, and the teacher folder's tokenizer has none: set one and save it with the model "
                '(`tokenizer.chat_template = "{% for message in messages %}..."; '
                "tokenizer.save_pretrained(folder)`), then upload the folder again; or write the records as "
                "`prompt` and `completion`.",
                param=f"dataset.{role}_file_id",
            )


def _has_chat_template(folder: dict) -> bool:
    """Whether the tokenizer of an `hf` teacher's folder (what its upload check read) has a chat template."""
    in_config = (folder.get("tokenizer_config") or {}).get("chat_template")
    return bool(in_config) or CHAT_TEMPLATE_FILE in folder.get("tokenizer_files", [])


def _check_tokenizer(request: JobCreate, dataset_formats: dict[str, str], teachers: list[File]) -> None:
    """Text is tokenized by the job's `tokenizer` file for a transformer student, by the first teacher
    folder's own tokenizer for a transformers (`hf`) one."""
    student = request.student.architecture
    text_roles = [role for role, form in dataset_formats.items() if form in ("jsonl", "parquet")]
    given = request.dataset.tokenizer_file_id is not None
    if isinstance(student, HFSpec):
        if given:
            raise unprocessable(
                "unexpected_tokenizer",
                "A transformers (`hf`) student's text is tokenized by the teacher folder's own tokenizer: "
                "remove dataset.tokenizer_file_id.",
                param="dataset.tokenizer_file_id",
            )
        if text_roles and reads_token_ids(student) and not (teachers[0].details or {}).get("tokenizer_files"):
            raise unprocessable(
                "tokenizer_required",
                f"dataset.{text_roles[0]}_file_id is text, which is tokenized by the teacher folder's own "
                "tokenizer, and the teacher's folder holds none: save it beside the model "
                "(`tokenizer.save_pretrained(folder)`) and upload the folder again.",
                param=f"dataset.{text_roles[0]}_file_id",
            )
        return
    if given and student.family != "transformer":
        raise unprocessable(
            "unexpected_tokenizer",
            f"A tokenizer serves a transformer student's text data, but the student is a {student.family} "
            "model: remove dataset.tokenizer_file_id.",
            param="dataset.tokenizer_file_id",
        )
    if text_roles and not given:
        raise unprocessable(
            "tokenizer_required",
            f"dataset.{text_roles[0]}_file_id is a JSON Lines text file, which is tokenized with the models' "
            "own tokenizer: upload it (purpose `tokenizer`) and give it as dataset.tokenizer_file_id.",
            param="dataset.tokenizer_file_id",
        )
