"""A causal language model's epoch: each step, the student's final hidden states and the teacher's on the same
blocks, the token-level losses a chunk of tokens at a time (`TokenObjective`), on the batch's blocks or, on an
on-policy step, on the student's own continuations of their prompts (`on_policy`); after the epoch, the
student measured on the validation blocks against the teacher (`evaluate.token_scores`)."""

import math

import torch

from engine.data.lm_text import IGNORE_INDEX
from engine.evaluate import LiveTeacher, evaluating, flat_hidden, head_of, token_scores
from engine.lm_preparation import LMSetup, reads_teacher
from engine.losses.features import FeatureDistiller, sample_shapes
from engine.losses.token_objective import TokenObjective, token_layers
from engine.models.hf.lora import add_lora, lora_summary
from engine.models.hf.teacher_init import initialise_hf_student
from engine.models.hooks import LayerTaps
from engine.models.registry import count_parameters
from engine.plan.specs import EngineJob
from engine.reporting import Reporter
from engine.runtime.compute import compile_model
from engine.train.loop import (
    Clock,
    EpochTask,
    Learner,
    Run,
    epoch_line,
    loss_values,
    temperature_at,
    training_diverged,
)
from engine.train.on_policy import on_policy_steps
from engine.train.students import Student, build_learner


def build_lm_student(setup: LMSetup, job: EngineJob, reporter: Reporter) -> Student:
    """The student at random initialisation from the job's seed, or initialised from the teacher's layers;
    with `student_lora`, those weights frozen and LoRA adapters on them."""
    spec = job.student_architecture
    torch.manual_seed(job.training.seed)  # right before building: the student's init depends on the seed only
    model = build_learner(spec, []).to(setup.device)
    reporter.event(f"Student built (hf {spec.model_type}): {count_parameters(model):,} parameters")
    if job.student_init == "teacher":
        reporter.event(initialise_hf_student(model, setup.teacher))
    lora = None
    if job.student_lora is not None:
        lora = add_lora(model, job.student_lora, setup.teacher)
        reporter.event(lora_summary(lora.figures))
    taps = LayerTaps(model, [pair.student for pair in job.distillation.features], "student")
    features = lm_feature_distiller(setup, job, model, taps)
    if job.training.compile:
        compile_model(model, reporter)
    objective = TokenObjective(job.distillation, features).to(setup.device)
    return Student(spec, model, taps, objective, lora)


def lm_feature_distiller(
    setup: LMSetup, job: EngineJob, model: torch.nn.Module, taps: LayerTaps
) -> FeatureDistiller | None:
    """The feature pairs' projections, sized from the paired layers' outputs on two training blocks."""
    pairs = job.distillation.features
    if not pairs:
        return None
    probe = setup.train.take(slice(0, 2), setup.device)
    with evaluating(model), torch.no_grad():
        flat_hidden(model, probe)
        flat_hidden(setup.teacher, probe)
    teacher_shapes = sample_shapes(setup.teacher_taps.outputs, "teacher")
    return FeatureDistiller(pairs, sample_shapes(taps.outputs, "student"), [teacher_shapes])


def train_lm_epoch(setup: LMSetup, run: Run, job: EngineJob, clock: Clock) -> None:
    """The rest of the run's epoch, from the batch it reached; each learner's means weigh a batch by the
    tokens it learnt."""
    (learner,) = run.learners
    learner.student.model.train()
    on_policy = on_policy_steps(setup, job)
    for index in setup.ranks.batches(run.order, job.training.batch_size, run.batch):
        clock.tick()
        batch = setup.train.take(index, setup.device)
        seed = None if on_policy is None else on_policy.draw(run.generator)
        if seed is not None:
            with setup.precision.autocast():
                batch = on_policy.sampled(learner.student.model, batch, seed)
        labels = batch.labels.flatten()
        temperature = temperature_at(job.distillation, run.step, run.total_steps)
        with setup.precision.autocast():
            teacher = None
            if seed is not None:  # the cache's tables hold the teacher on the dataset's blocks, not samples
                teacher = LiveTeacher(setup.teacher, setup.top_k).tokens(index, batch)
            elif reads_teacher(job):
                teacher = setup.training_teacher.tokens(index, batch)
            hidden = flat_hidden(learner.model, batch)
            layers = None
            if job.distillation.features:  # the teacher ran on this batch above, its taps recording
                layers = tuple(
                    token_layers(taps.outputs, batch.attention_mask)
                    for taps in (learner.student.taps, setup.teacher_taps)
                )
            terms = learner.objective(
                hidden,
                head_of(learner.student.model),
                labels,
                teacher,
                temperature,
                cross_entropy=seed is None,  # never on the student's own tokens
                layers=layers,
            )
        losses = loss_values(terms, setup.ranks)
        if not math.isfinite(losses["loss"]):
            raise training_diverged(losses["loss"], temperature, clock, job)
        learner.descend(terms["loss"])
        learner.means.add(losses, weight=int((labels != IGNORE_INDEX).sum()))


def lm_epoch_values(setup: LMSetup, learners: list[Learner], batch_size: int) -> dict[str, float]:
    """The student's training losses, and its validation perplexity, next-token accuracy, KL to the teacher
    and top-1 agreement with it (the teacher read as the training reads it: its top-k form, with a top_k)."""
    (learner,) = learners
    student, teacher = learner.student.model, setup.validation_teacher
    scores = token_scores(student, teacher, setup.validation, batch_size, setup.device)
    return learner.means.means() | {
        "validation_perplexity": scores["perplexity"],
        "validation_accuracy": scores["accuracy"],
        "validation_kl": scores["kl_to_teacher"],
        "validation_agreement": scores["agreement"],
    }


def lm_epoch_summary(epoch: int, epochs: int, values: dict[str, float], run: str) -> str:
    parts = [
        f"loss {values['loss']:.4f}",
        f"validation perplexity {values['validation_perplexity']:.3f}",
        f"KL to the teacher {values['validation_kl']:.4f}",
        f"top-1 agreement {values['validation_agreement']:.2%}",
    ]
    return epoch_line(epoch, epochs, run, parts)


LANGUAGE_MODEL = EpochTask(train_lm_epoch, lm_epoch_values, lm_epoch_summary)
