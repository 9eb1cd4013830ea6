"""Students with what trains them: the model (initialised at random or from the teacher), the taps on the
layers that feature pairs and TinyBERT read, and the objective, whose projections train too."""

from dataclasses import dataclass

import torch
from torch import nn

from engine.evaluate import evaluating
from engine.losses.features import FeatureDistiller, sample_shapes
from engine.losses.objective import Objective
from engine.losses.tinybert import capture_paths, transformer_term, uses_tinybert
from engine.losses.token_objective import TokenObjective
from engine.models.hf.build import build_hf_model
from engine.models.hf.lora import LoraStudent
from engine.models.hf.outputs import attention_implementation
from engine.models.hf.teacher_init import initialise_hf_student
from engine.models.hooks import LayerTaps
from engine.models.registry import build_model, count_parameters
from engine.models.teacher_init import init_from_teacher
from engine.plan.errors import JobFailed
from engine.plan.rules import initialising_teacher_architecture
from engine.plan.specs import ArchitectureSpec, EngineJob, HFSpec
from engine.preparation import Setup
from engine.reporting import Reporter
from engine.runtime.compute import compile_model, memory_format


@dataclass
class Student:
    """A student with what trains it."""

    spec: ArchitectureSpec
    model: nn.Module
    taps: LayerTaps
    objective: Objective | TokenObjective  # a classifier's, or a causal language model's
    lora: LoraStudent | None = None  # a causal language model's LoRA adapters, around its model's


def build_student(
    setup: Setup, job: EngineJob, spec: ArchitectureSpec, seed: int, reporter: Reporter
) -> Student:
    layer_paths = student_layer_paths(job, spec)
    torch.manual_seed(seed)  # right before building: the student's init depends on the seed only
    model = build_learner(spec, layer_paths).to(setup.device, memory_format=memory_format(spec, setup.device))
    reporter.event(f"Student built ({spec.family}): {count_parameters(model):,} parameters")
    if job.student_init == "teacher":
        reporter.event(initialise_from_teacher(model, spec, job, setup))
    taps = LayerTaps(model, layer_paths, "student", record_input=uses_tinybert(job, spec))
    features = feature_distiller(job, model, taps, setup)
    transformer = transformer_term(job, spec, taps)
    if job.training.compile:
        compile_model(model, reporter)
    return Student(spec, model, taps, Objective(job.distillation, features, transformer).to(setup.device))


def initialise_from_teacher(model: nn.Module, spec: ArchitectureSpec, job: EngineJob, setup: Setup) -> str:
    """Copy the first teacher's layers into the model (the student or a peer, of architecture `spec`);
    returns what was copied, in words."""
    teacher_spec = initialising_teacher_architecture(job.teachers)
    teacher = setup.teachers.teachers[0]
    if isinstance(spec, HFSpec):
        return initialise_hf_student(model, teacher)
    return init_from_teacher(model, teacher.state_dict(), spec, teacher_spec).summary


def student_layer_paths(job: EngineJob, spec: ArchitectureSpec) -> list[str]:
    """The student's layers that feature pairs and TinyBERT read. Its taps record them, and for TinyBERT
    also its input ids, whose padding the TinyBERT losses leave out."""
    paths = [pair.student for pair in job.distillation.features]
    return paths + capture_paths(spec) if uses_tinybert(job, spec) else paths


def build_learner(spec: ArchitectureSpec, layer_paths: list[str]) -> nn.Module:
    """The model of `spec` at random initialisation; a transformers model attends eagerly where its
    attention probabilities are among the layers read."""
    if isinstance(spec, HFSpec):
        return build_hf_model(spec, attention_implementation(layer_paths))
    return build_model(spec)


def feature_distiller(
    job: EngineJob, student: nn.Module, taps: LayerTaps, setup: Setup
) -> FeatureDistiller | None:
    """Projections sized from one probe batch through the student and the teachers."""
    pairs = job.distillation.features
    if not pairs:
        return None
    x = setup.train.x[:2].to(setup.device)
    with evaluating(student), torch.no_grad():
        student(x)
        teacher_layers = setup.teachers(x).layers
    missing = [p.teacher for p in pairs if p.teacher not in teacher_layers[p.teacher_index]]
    if missing:
        raise JobFailed(
            "unknown_layer",
            f"teacher layer(s) {', '.join(map(repr, missing))} produced no output: the module exists but "
            "its forward never ran (in a pt2 teacher, torch.export may have inlined or merged the call); "
            "pick a layer that runs in forward, or use a safetensors teacher for feature distillation",
        )
    student_shapes = sample_shapes(taps.outputs, "student")
    teacher_shapes = [sample_shapes(outputs, "teacher") for outputs in teacher_layers]
    return FeatureDistiller(pairs, student_shapes, teacher_shapes)
