"""The rules of a job that need no file: the teachers feature pairs read, models that agree (classes, token
ids or features, sequence length), methods that combine, TinyBERT's models and layer map, and the teacher a
derived student starts from. Without torch, so the API refuses a request by the very rules the engine
applies again before it reads any file.

Each broken rule is a `JobFailed` whose `param` is the field of the HTTP job request at fault, a teacher
named as the request names it: `teacher`, or `teachers.0`, `teachers.1`, ... for a list.
"""

from collections.abc import Sequence

from engine.plan.design import layer_count
from engine.plan.errors import JobFailed
from engine.plan.hf_layers import TINYBERT_MODEL_TYPES, declared_layers
from engine.plan.layer_map import check_layer_map
from engine.plan.lora_adapters import DECODER_LINEAR_LAYERS, targets_a_layer
from engine.plan.specs import (
    ArchitectureSpec,
    EngineJob,
    Sampling,
    TeacherSource,
    TextOptions,
    is_causal_lm,
    reads_token_ids,
)

TINYBERT_FIELD = "distillation.transformer"


def check_job(job: EngineJob, teacher_fields: Sequence[str] | None = None) -> None:
    """`teacher_fields[i]`: the request's field of teacher i (default: `teacher` for a single teacher,
    else `teachers.i`)."""
    fields = _teacher_fields(job.teachers, teacher_fields)
    _check_feature_teachers(job)
    _check_language_model(job, fields)
    _check_lora(job)
    _check_classes(job, fields)
    _check_method(job)
    _check_families(job, fields)
    _check_peers(job)
    if job.student_init == "teacher":
        teacher = initialising_teacher_architecture(job.teachers, fields)
        for field, spec in learners(job):
            if spec.family != "hf":  # a transformers student says in an event what it could not copy
                check_initialisable(spec, teacher, field)
    _check_tinybert(job, fields)


def learners(job: EngineJob) -> list[tuple[str, ArchitectureSpec]]:
    """The models the job trains with the request field of each: the student and its `mutual` peers."""
    peers = [(f"distillation.peers.{i}", peer) for i, peer in enumerate(job.distillation.peers)]
    return [("student.architecture", job.student_architecture), *peers]


def check_initialisable(
    spec: ArchitectureSpec, teacher: ArchitectureSpec, field: str = "student.architecture"
) -> None:
    """A model initialised from the teacher's layers is of the teacher's family and no deeper: each of its
    layers starts from a teacher layer of its own."""
    if spec.family != teacher.family:
        raise JobFailed(
            "init_family_mismatch",
            f"{field} is a {spec.family} model, which cannot be initialised from a {teacher.family} teacher: "
            "use the teacher's family, or turn off initialisation from the teacher.",
            field,
        )
    layers, teacher_layers = layer_count(spec), layer_count(teacher)
    if layers > teacher_layers:
        raise JobFailed(
            "init_student_deeper",
            f"{field} has {layers} layers (blocks per stage for cnn) and the teacher {teacher_layers}: each "
            f"layer starts from a teacher layer of its own, so use at most {teacher_layers}, or turn off "
            "initialisation from the teacher.",
            field,
        )


def initialising_teacher_architecture(
    teachers: Sequence[TeacherSource], teacher_fields: Sequence[str] | None = None
) -> ArchitectureSpec:
    """The first teacher's architecture, which a student derived from the teacher is designed and
    initialised from; `architecture_required` where it declares none (a pt2 or onnx teacher)."""
    architecture = teachers[0].architecture
    if architecture is None:
        field = _teacher_fields(teachers, teacher_fields)[0]
        raise JobFailed(
            "architecture_required",
            f"student.derive designs the student from {field}'s architecture, which a {teachers[0].format} "
            "teacher does not declare: use a safetensors teacher, or give student.architecture.",
            "student.derive",
        )
    return architecture


def _teacher_fields(teachers: Sequence[TeacherSource], teacher_fields: Sequence[str] | None) -> list[str]:
    if teacher_fields is not None:
        return list(teacher_fields)
    return ["teacher"] if len(teachers) == 1 else [f"teachers.{i}" for i in range(len(teachers))]


# What a causal language model's job cannot ask for yet, each with the request field and what to do instead.
LANGUAGE_MODEL_UNSUPPORTED = (
    ("distillation.soft_loss", lambda d, _t: d.soft_loss != "kl", "give `distillation.divergence` instead"),
    (
        "distillation.logit_standardization",
        lambda d, _t: d.logit_standardization,
        "set it to false",
    ),
    ("distillation.method", lambda d, _t: d.method != "standard", "use the `standard` method"),
    ("distillation.transformer", lambda d, _t: d.transformer is not None, "remove it"),
    (
        "distillation.temperature",
        lambda d, t: "auto" in (d.temperature, d.alpha, t.learning_rate),
        "give temperature, alpha and learning_rate as numbers (the `auto` search)",
    ),
)


def _check_language_model(job: EngineJob, fields: list[str]) -> None:
    """A causal language model learns from causal language models only (the vocabularies' match is the
    pairing's rule), one teacher, by the token-level losses; the classifiers' other methods are refused by
    name."""
    student = job.student_architecture
    lm_teachers = [is_causal_lm(teacher.architecture) for teacher in job.teachers]
    if not is_causal_lm(student):
        if job.distillation.alone_reference:
            raise JobFailed(
                "unsupported_combination",
                "distillation.alone_reference trains a causal language model's reference; for a "
                f"{_kind(student)}, submit the same job with alpha 0 and beta 1 beside it.",
                "distillation.alone_reference",
            )
        for name, value in job.text:
            if value != TextOptions.model_fields[name].default:
                raise JobFailed(
                    "unsupported_combination",
                    f"dataset.{name} says how a causal language model's records become blocks of tokens; "
                    f"the student is a {_kind(student)}: remove dataset.{name}.",
                    f"dataset.{name}",
                )
        generated = _generations(job)
        if generated:
            name = generated[0][0]
            raise JobFailed(
                "unsupported_combination",
                f"distillation.{name} distils a causal language model on generated text; the student is a "
                f"{_kind(student)}: remove distillation.{name}.",
                f"distillation.{name}",
            )
        if any(lm_teachers):
            field = fields[lm_teachers.index(True)]
            raise JobFailed(
                "incompatible_architectures",
                f"{field} is a causal language model but the student a {_kind(student)}: a language model "
                "teaches a language model (student.derive, or student.hf with a causal LM model_type).",
                "student.architecture",
            )
        return
    if len(job.teachers) > 1:
        raise JobFailed(
            "unsupported_combination",
            "a causal language model learns from one teacher here: give `teacher`, not several `teachers`.",
            "teachers",
        )
    if not lm_teachers[0]:
        raise JobFailed(
            "incompatible_architectures",
            f"the student is a causal language model, which learns the next-token distributions of a causal "
            f"language model, but {fields[0]} is a {_teacher_kind(job.teachers[0])}: upload the teacher as a "
            "transformers causal LM folder (save_pretrained).",
            f"{fields[0]}.file_id",
        )
    distillation, training = job.distillation, job.training
    for field, asks, instead in LANGUAGE_MODEL_UNSUPPORTED:
        if asks(distillation, training):
            raise JobFailed(
                "unsupported_combination",
                f"{field} is for classifiers; a causal language model learns by the token-level divergence "
                f"(`distillation.divergence`) and the next-token cross-entropy: {instead}.",
                field,
            )
    if "int8" in job.export:
        raise JobFailed(
            "unsupported_combination",
            "export `int8` (an int8 pt2 program) is not made for causal language models: the student comes "
            "as a transformers folder (student.hf.zip), and as student.onnx with `onnx`; remove `int8`.",
            "export",
        )
    _check_generations(job)


def _generations(job: EngineJob) -> list[tuple[str, Sampling]]:
    """The generation-based objectives the job asks for, by field name in `distillation`."""
    distillation = job.distillation
    asked = {"sequence_level": distillation.sequence_level, "on_policy": distillation.on_policy}
    return [(name, sampling) for name, sampling in asked.items() if sampling is not None]


def _check_generations(job: EngineJob) -> None:
    """A text block's prompt leaves room for a generated token and the EOS; on-policy steps learn by the
    divergence alone."""
    max_length = job.student_architecture.max_length
    for name, sampling in _generations(job):
        if sampling.prompt_tokens is not None and sampling.prompt_tokens > max_length - 2:
            raise JobFailed(
                "unsupported_combination",
                f"distillation.{name}.prompt_tokens is {sampling.prompt_tokens}, but a block holds "
                f"dataset.max_length {max_length} tokens, which must leave room for a generated token and "
                f"the EOS: give at most {max_length - 2}, or raise dataset.max_length.",
                f"distillation.{name}.prompt_tokens",
            )
    if job.distillation.on_policy is not None and job.distillation.alpha == 0:
        raise JobFailed(
            "unsupported_combination",
            "distillation.on_policy's steps learn the teacher's distributions on the student's own tokens by "
            "the divergence, which alpha 0 turns off: give alpha > 0, or remove distillation.on_policy.",
            "distillation.alpha",
        )


LORA_FIELD = "student.lora"


def _check_lora(job: EngineJob) -> None:
    """LoRA adapts a causal language model that starts from the teacher's weights (on random ones, low-rank
    updates of untrained layers would learn next to nothing), in the linear layers of its decoder layers."""
    lora, student = job.student_lora, job.student_architecture
    if lora is None:
        return
    if not is_causal_lm(student):
        raise JobFailed(
            "unsupported_combination",
            f"{LORA_FIELD} adapts a causal language model; the student is a {_kind(student)}, which trains "
            f"whole: remove {LORA_FIELD}.",
            LORA_FIELD,
        )
    if job.student_init != "teacher":
        raise JobFailed(
            "unsupported_combination",
            f"{LORA_FIELD} trains low-rank updates of a student that starts from the teacher's weights, and "
            "this one starts at random: give the student as student.derive with init `teacher` "
            f"(depth 1 and width 1 for a copy of the teacher), or remove {LORA_FIELD}.",
            LORA_FIELD,
        )
    for number, target in enumerate(lora.target_modules or []):
        if not targets_a_layer(target, student.model_type):
            layers = ", ".join(DECODER_LINEAR_LAYERS[student.model_type])
            raise JobFailed(
                "unsupported_combination",
                f"{LORA_FIELD}.target_modules names {target!r}, which is none of a {student.model_type} "
                f"decoder layer's linear layers ({layers}): name those (or their ends, such as `q_proj`); "
                "the embeddings and the LM head are not adapted.",
                f"{LORA_FIELD}.target_modules.{number}",
            )


def _teacher_kind(teacher: TeacherSource) -> str:
    if teacher.architecture is None:
        return f"{teacher.format} program"
    return _kind(teacher.architecture)


def _check_feature_teachers(job: EngineJob) -> None:
    count = len(job.teachers)
    for i, pair in enumerate(job.distillation.features):
        if pair.teacher_index >= count:
            raise JobFailed(
                "unknown_teacher",
                f"Feature pair {i} reads teacher {pair.teacher_index}, but the job has {count} "
                f"{'teacher' if count == 1 else 'teachers'}: teacher_index counts from 0, so it must be "
                f"below {count}.",
                f"distillation.features.{i}.teacher_index",
            )


def _check_classes(job: EngineJob, fields: list[str]) -> None:
    """Every teacher of declared architecture, and every peer, has the student's classes."""
    num_classes = job.student_architecture.num_classes
    for field, teacher in zip(fields, job.teachers, strict=True):
        if teacher.architecture is not None and teacher.architecture.num_classes != num_classes:
            raise JobFailed(
                "incompatible_shapes",
                f"{field} outputs {teacher.architecture.num_classes} classes but "
                f"student.architecture.num_classes is {num_classes}: the student learns the teacher's "
                f"classes, so set it to {teacher.architecture.num_classes}.",
                "student.architecture.num_classes",
            )
    for i, peer in enumerate(job.distillation.peers):
        if peer.num_classes != num_classes:
            raise JobFailed(
                "incompatible_shapes",
                f"Peer {i} has {peer.num_classes} classes but the student {num_classes}: peers learn the "
                f"student's task, so set distillation.peers.{i}.num_classes to {num_classes}.",
                f"distillation.peers.{i}.num_classes",
            )


def _check_method(job: EngineJob) -> None:
    distillation = job.distillation
    if distillation.method == "born_again" and distillation.features:
        raise JobFailed(
            "unsupported_combination",
            "born_again generations are taught by the previous student, which lacks the teacher layers that "
            "`features` names: drop `features` or use another method.",
            "distillation.features",
        )


def _check_families(job: EngineJob, fields: list[str]) -> None:
    """A text model (a transformer, a transformers text model) reads token ids and the others features: each
    teacher of declared architecture reads token ids exactly when the student does, and sequences as long."""
    student = job.student_architecture
    text = reads_token_ids(student)
    for field, teacher in zip(fields, job.teachers, strict=True):
        architecture = teacher.architecture
        if architecture is None:
            continue
        if reads_token_ids(architecture) != text:
            raise JobFailed(
                "incompatible_architectures",
                f"{field} is a {_kind(architecture)} but the student a {_kind(student)}: a text model reads "
                "token ids and the others features, so both must be text models or neither.",
                f"{field}.architecture",
            )
        if text and architecture.max_length < student.max_length:
            raise JobFailed(
                "incompatible_shapes",
                f"The student reads up to {student.max_length} tokens but {field} only "
                f"{architecture.max_length} (its max_length), so the student's later positions could never "
                f"be taught: set student.architecture.max_length to at most {architecture.max_length}.",
                "student.architecture.max_length",
            )


def _check_peers(job: EngineJob) -> None:
    """A peer reads the student's data: a text model exactly when the student is, and then sequences as
    long as the student's."""
    student = job.student_architecture
    for field, peer in learners(job)[1:]:
        if reads_token_ids(peer) != reads_token_ids(student):
            raise JobFailed(
                "incompatible_architectures",
                f"{field} is a {_kind(peer)} but the student a {_kind(student)}: a text model reads token "
                "ids and the others features, so a peer is a text model exactly when the student is.",
                field,
            )
        if reads_token_ids(peer) and peer.max_length < student.max_length:
            raise JobFailed(
                "incompatible_shapes",
                f"{field} reads up to {peer.max_length} tokens but the student's data runs to "
                f"{student.max_length}: set {field}.max_length to at least {student.max_length}.",
                f"{field}.max_length",
            )


def _kind(spec: ArchitectureSpec) -> str:
    """A model's family in words: `transformer model`, `hf text model`."""
    return f"hf {spec.task} model" if spec.family == "hf" else f"{spec.family} model"


def tinybert_kind(spec: ArchitectureSpec | None) -> str | None:
    """The kind of model whose layers TinyBERT matches: `transformer`, or `hf` for a transformers text
    encoder whose layers and attention probabilities it reaches; None for any other model."""
    if spec is None:
        return None
    if spec.family == "transformer":
        return "transformer"
    if spec.family == "hf" and spec.model_type in TINYBERT_MODEL_TYPES:
        return "hf"
    return None


def _check_tinybert(job: EngineJob, fields: list[str]) -> None:
    """TinyBERT: a student and a first teacher of one kind (two transformers, or two transformers text
    encoders, the teacher's architecture declared), a layer map that fits both, and teachers (not earlier
    generations) to read the layers of."""
    distillation = job.distillation
    config = distillation.transformer
    if config is None:
        return
    student, teacher = job.student_architecture, job.teachers[0].architecture
    if tinybert_kind(student) is None:
        raise JobFailed(
            "transformer_required",
            f"distillation.transformer (TinyBERT) matches the layers of text encoders, but the student is "
            f"{_tinybert_described(student)}: use a transformer student or an hf text encoder TinyBERT "
            f"reads ({', '.join(TINYBERT_MODEL_TYPES)}), or remove distillation.transformer.",
            TINYBERT_FIELD,
        )
    if tinybert_kind(teacher) is None:
        what = (
            f"a {job.teachers[0].format} program, whose architecture is not declared"
            if teacher is None
            else _tinybert_described(teacher)
        )
        raise JobFailed(
            "transformer_required",
            f"distillation.transformer (TinyBERT) reads the layers of {fields[0]}, which is {what}: make it "
            "a safetensors transformer teacher with its architecture, or an hf text encoder TinyBERT reads "
            f"({', '.join(TINYBERT_MODEL_TYPES)}).",
            TINYBERT_FIELD,
        )
    if tinybert_kind(student) != tinybert_kind(teacher):
        raise JobFailed(
            "transformer_required",
            f"distillation.transformer (TinyBERT) matches the layers of two models of one kind, which read "
            f"the same token ids padded alike; the student is a {_kind(student)} and {fields[0]} a "
            f"{_kind(teacher)}: give the student the teacher's kind (transformer, or hf), or remove "
            "distillation.transformer.",
            TINYBERT_FIELD,
        )
    layers = (_tinybert_layers(student), _tinybert_layers(teacher))
    if config.layer_map is not None and None not in layers:
        check_layer_map(config.layer_map, *layers)
    if distillation.method == "born_again":
        raise JobFailed(
            "unsupported_combination",
            "born_again generations are taught by the previous student, which lacks the teacher layers that "
            "distillation.transformer (TinyBERT) reads: remove it or use another method.",
            TINYBERT_FIELD,
        )


def _tinybert_described(spec: ArchitectureSpec) -> str:
    """A model TinyBERT cannot read, and why, for its messages."""
    if spec.family != "hf":
        return f"a {spec.family} model"
    if spec.task != "text":
        return f"an hf image model ({spec.model_type}), whose layers are no text encoder's"
    return (
        f"an hf text model ({spec.model_type}), whose layers transformers does not give one module each "
        "with its attention probabilities"
    )


def _tinybert_layers(spec: ArchitectureSpec) -> int | None:
    """The encoder layers TinyBERT maps; None where an hf config leaves transformers' default."""
    return spec.num_layers if spec.family == "transformer" else declared_layers(spec)
