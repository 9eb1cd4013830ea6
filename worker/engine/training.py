"""The training loop: one or several students (a cohort) against the frozen teachers, epoch by epoch."""

import math

import torch
from torch import Tensor, nn

from worker.engine.augment import augment
from worker.engine.data import batch_bounds, iterate_batches
from worker.engine.errors import DistillError, JobCancelled
from worker.engine.evaluate import classification_metrics, predict
from worker.engine.losses import TeacherOutputs, kl_loss, scheduled_temperature
from worker.engine.reporting import Reporter
from worker.engine.setup import Setup, Student
from worker.engine.specs import DistillationConfig, EngineJob, TrainingConfig


class RunningMeans:
    """Per-sample means of per-batch values, weighting each batch by its size."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0

    def add(self, values: dict[str, float], weight: int) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weight += weight

    def means(self) -> dict[str, float]:
        return {name: total / self.weight for name, total in self.sums.items()}


class Clock:
    """Counts steps and epochs across every training run of a job (trials, peers, generations), for
    progress, and checks for cancellation at every step."""

    def __init__(self, reporter: Reporter, epochs: int, steps_per_epoch: int):
        self.reporter, self.epochs, self.total_steps = reporter, epochs, epochs * steps_per_epoch
        self.epoch = self.step = 0

    def tick(self) -> None:
        if self.reporter.should_stop():
            raise JobCancelled(f"stopped at step {self.step} of {self.total_steps}")
        self.step += 1
        self.reporter.progress(self.epoch, self.epochs, self.step, self.total_steps)


def steps_per_epoch(setup: Setup, job: EngineJob) -> int:
    return len(batch_bounds(len(setup.train), job.training.batch_size))


def train_cohort(
    setup: Setup, cohort: list[Student], job: EngineJob, reporter: Reporter, clock: Clock, run: str = ""
) -> list[dict]:
    """Train the students together against the teachers; with several, each also learns from the
    others' softened outputs (deep mutual learning). Returns the per-epoch series it reported.

    A job's main run reports under plain metric names; its other runs (`run`: `trial2`, `generation2`)
    under `<run>_<name>`."""
    config, distillation = job.training, job.distillation
    generator = torch.Generator().manual_seed(config.seed)  # the shuffle order, independent of model RNG
    run_steps = config.epochs * steps_per_epoch(setup, job)
    optimizers = [make_optimizer([*s.model.parameters(), *s.objective.parameters()], config) for s in cohort]
    schedulers = [make_scheduler(o, config.lr_schedule, run_steps) for o in optimizers]
    series: list[dict] = []
    run_step = 0
    for epoch in range(1, config.epochs + 1):
        clock.epoch += 1
        means = [RunningMeans() for _ in cohort]
        for student in cohort:
            student.model.train()
        for x, y in iterate_batches(setup.train, config.batch_size, generator, shuffle=True):
            clock.tick()
            run_step += 1
            x, y = x.to(setup.device), None if y is None else y.to(setup.device)
            x = augment(x, config.augmentation, generator)
            temperature = temperature_at(distillation, run_step, run_steps)
            teachers = setup.teachers(x, generator)
            logits = [student.model(x) for student in cohort]
            for k, (student, optimizer, scheduler) in enumerate(
                zip(cohort, optimizers, schedulers, strict=True)
            ):
                terms = student.objective(
                    logits[k], teachers, y, temperature, student.taps.outputs, setup.teachers.layer_outputs()
                )
                if len(cohort) > 1:
                    terms = terms | mutual_terms(
                        logits, k, temperature, distillation.mutual_weight, terms["loss"]
                    )
                losses = loss_values(terms)
                if not math.isfinite(losses["loss"]):
                    raise divergence(losses["loss"], teachers, clock.epoch, clock.step, job)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                scheduler.step()
                means[k].add(losses, weight=len(x))
        values = epoch_values(setup, cohort, means, config.batch_size)
        if distillation.final_temperature is not None:
            values["temperature"] = temperature
        reporter.event(epoch_summary(epoch, config.epochs, values, run))
        values = {f"{run}_{name}" if run else name: value for name, value in values.items()}
        reporter.metrics(clock.epoch, clock.step, values)
        series += [
            {"step": clock.step, "epoch": clock.epoch, "name": n, "value": v} for n, v in values.items()
        ]
    return series


def mutual_terms(logits: list[Tensor], k: int, temperature: float, weight: float, loss: Tensor) -> dict:
    """Student k's KL to its peers' (detached) mean softened distribution, added to its loss."""
    peers = torch.stack([other.detach() for j, other in enumerate(logits) if j != k])
    peer_outputs = TeacherOutputs(peers, torch.full((len(peers),), 1 / len(peers), device=peers.device))
    mutual = kl_loss(logits[k], peer_outputs, temperature)
    return {"loss": loss + weight * mutual, "mutual_loss": mutual}


def epoch_values(setup: Setup, cohort: list[Student], means: list["RunningMeans"], batch_size: int) -> dict:
    """The first student's losses and scores under plain names, its peers' as `peer<k>_…`, and how
    often the whole cohort agrees."""
    values = means[0].means() | validation_scores(setup, cohort[0].model, batch_size)
    if len(cohort) == 1:
        return values
    predictions = [predict(s.model, setup.validation.x, batch_size, setup.device).argmax(1) for s in cohort]
    for k, student in enumerate(cohort[1:], start=1):
        peer = {"loss": means[k].means()["loss"]} | validation_scores(setup, student.model, batch_size)
        values |= {f"peer{k}_{name}": value for name, value in peer.items()}
    values["mutual_agreement"] = (
        torch.stack([p == predictions[0] for p in predictions]).all(0).float().mean().item()
    )
    return values


def temperature_at(distillation: DistillationConfig, step: int, total_steps: int) -> float:
    progress = (step - 1) / max(total_steps - 1, 1)
    return scheduled_temperature(
        distillation.temperature, distillation.final_temperature, distillation.temperature_schedule, progress
    )


def make_optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    lr, decay = config.learning_rate, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A learning-rate factor per step: 1 throughout, or a cosine from 1 down to 0 at the last step."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def loss_values(terms: dict[str, Tensor]) -> dict[str, float]:
    """The batch's loss terms as floats, in one device-to-host copy."""
    values = torch.stack([term.detach().float() for term in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


def divergence(loss: float, teachers: TeacherOutputs, epoch: int, step: int, job: EngineJob) -> DistillError:
    if not torch.isfinite(teachers.logits).all():
        return DistillError(
            "loss_diverged",
            f"the teacher produced NaN or infinite logits at epoch {epoch}, step {step}, so the loss is "
            f"{loss}: check the teacher's weights and the input data",
        )
    return DistillError(
        "loss_diverged",
        f"the loss became {loss} at epoch {epoch}, step {step}: training diverged. Try a lower learning_rate "
        f"(now {job.training.learning_rate}) or temperature (now {job.distillation.temperature})",
    )


def validation_scores(setup: Setup, student: nn.Module, batch_size: int) -> dict[str, float]:
    student_logits = predict(student, setup.validation.x, batch_size, setup.device)
    scores = classification_metrics(setup.teacher_validation_logits, student_logits, setup.validation.y)
    values = {"validation_agreement": scores["agreement"]}
    if scores["student_accuracy"] is not None:
        values = {"validation_accuracy": scores["student_accuracy"]} | values
    return values


def epoch_summary(epoch: int, epochs: int, values: dict[str, float], run: str = "") -> str:
    parts = [f"loss {values['loss']:.4f}"]
    if "validation_accuracy" in values:
        parts.append(f"validation accuracy {values['validation_accuracy']:.2%}")
    parts.append(f"agreement with the teacher {values['validation_agreement']:.2%}")
    if "mutual_agreement" in values:
        parts.append(f"students agree on {values['mutual_agreement']:.2%}")
    return f"{run.capitalize() + ' ' if run else ''}Epoch {epoch}/{epochs}: " + ", ".join(parts)
