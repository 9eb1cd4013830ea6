"""The training loop: one or several students (a cohort) against the frozen teachers, epoch by epoch."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import torch
from torch import Tensor, nn

from engine.data.augment import augment
from engine.evaluate import classification_metrics, predict
from engine.losses.functions import ResponseBatch, TeacherOutputs, kl_loss, scheduled_temperature
from engine.plan.errors import JobCancelled, JobFailed, time_limit_exceeded
from engine.plan.specs import DistillationConfig, EngineJob, TrainingConfig
from engine.preparation import Setup
from engine.reporting import Reporter
from engine.runtime.compute import compiled_call, formatted, memory_format
from engine.runtime.distributed import ONE_PROCESS, Ranks
from engine.train.checkpoints import JobCheckpoints
from engine.train.students import Student

LARGE_INPUT = 1e4  # a standardized feature never comes near this


class RunningMeans:
    """Per-sample means of per-batch values, weighting each batch by its size."""

    def __init__(self, sums: dict[str, float] | None = None, weight: int = 0) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.weight = weight

    def add(self, values: dict[str, float], weight: int) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weight += weight

    def means(self) -> dict[str, float]:
        return {name: total / self.weight for name, total in self.sums.items()}


@dataclass
class Learner:
    """A student as a run trains it: its model and objective as the steps call them (each in a
    DistributedDataParallel over several ranks), its optimizer, learning-rate schedule and float16 gradient
    scaler, and the means of its losses over the epoch so far."""

    student: Student
    model: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    means: RunningMeans = field(default_factory=RunningMeans)

    def descend(self, loss: Tensor) -> None:
        """One step down the loss's gradient and along the learning-rate schedule; with float16's scaler,
        the optimizer's step is skipped where the gradients overflowed."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()

    def trained_state(self) -> dict:
        """What the export and later runs need once it is trained."""
        return {"model": self.student.model.state_dict(), "objective": self.student.objective.state_dict()}

    def load_trained_state(self, state: dict) -> None:
        self.student.model.load_state_dict(state["model"])
        self.student.objective.load_state_dict(state["objective"])

    def state_dict(self) -> dict:
        return self.trained_state() | {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "means": {"sums": self.means.sums, "weight": self.means.weight},
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_trained_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.means = RunningMeans(**state["means"])


@dataclass
class Run:
    """One call of `train_cohort`: its learners, and where it is, with all a checkpoint needs to continue
    it from the batch it reached. Only the `Clock` moves it on."""

    learners: list[Learner]
    generator: torch.Generator  # the shuffle, augmentation and teacher draws: independent of model RNG
    steps_per_epoch: int
    total_steps: int  # of its schedules: the job's epochs (an `auto` trial may stop before)
    epoch: int = 0  # epochs done
    order: Tensor | None = None  # this epoch's sample order; None between epochs
    batch: int = 0  # batches of this epoch begun
    series: list[dict] = field(default_factory=list)  # every point this run reported
    continued: bool = False  # trained in parts (an `auto` trial the job may go on with): see finished_state

    @property
    def step(self) -> int:
        """Steps begun: where the temperature and learning-rate schedules are."""
        return self.epoch * self.steps_per_epoch + self.batch

    @property
    def students(self) -> list[Student]:
        return [learner.student for learner in self.learners]

    def begin_epoch(self, num_samples: int) -> None:
        self.order = torch.randperm(num_samples, generator=self.generator)
        for learner in self.learners:
            learner.means = RunningMeans()

    def end_epoch(self) -> None:
        self.epoch, self.order, self.batch = self.epoch + 1, None, 0

    def state_dict(self) -> dict:
        return {
            "learners": [learner.state_dict() for learner in self.learners],
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "order": self.order,
            "batch": self.batch,
            "series": self.series,
        }

    def load_state_dict(self, state: dict) -> None:
        for learner, saved in zip(self.learners, state["learners"], strict=True):
            learner.load_state_dict(saved)
        self.generator.set_state(state["generator"])
        self.epoch, self.order, self.batch = state["epoch"], state["order"], state["batch"]
        self.series = list(state["series"])

    def finished_state(self) -> dict:
        """The trained students and the series, copied (a later run must not change them); for a run that
        may be continued, everything `state_dict` holds."""
        if self.continued:
            return cpu_copy(self.state_dict())
        trained = [learner.trained_state() for learner in self.learners]
        return cpu_copy({"learners": trained, "series": self.series})

    def load_finished_state(self, state: dict) -> None:
        if self.continued:
            self.load_state_dict(state)
            return
        for learner, saved in zip(self.learners, state["learners"], strict=True):
            learner.load_trained_state(saved)
        self.series = list(state["series"])


class Halt(IntEnum):
    """Why a step does not begin; the ranks take the largest of theirs, so a cancel comes first."""

    NONE = 0
    TIME_LIMIT = 1
    CANCEL = 2


class Clock:
    """The job's one clock: counts its steps and epochs across all its training runs (trials, peers,
    generations), for progress, and moves the run in progress on with them. At every step it checks for
    cancellation and for the job's `deadline` (a `time.time()`; None: none), and saves a checkpoint when
    one is due, or when the deadline stops the job.

    It starts where the last attempt's checkpoint left off, if there is one, and has the reporter forget
    what that attempt reported after it.
    """

    def __init__(
        self,
        reporter: Reporter,
        epochs: int,
        steps_per_epoch: int,
        checkpoints: JobCheckpoints,
        ranks: Ranks = ONE_PROCESS,
        deadline: float | None = None,
    ):
        self.reporter, self.epochs, self.total_steps = reporter, epochs, epochs * steps_per_epoch
        self.checkpoints, self.ranks, self.deadline = checkpoints, ranks, deadline
        self.run: Run | None = None
        restored = checkpoints.restored
        self.epoch, self.step = (0, 0) if restored is None else (restored.epoch, restored.step)  # begun
        reporter.rewind(self.step)
        if restored is not None:
            reporter.event(
                f"Resumed from the checkpoint at step {self.step} of {self.total_steps} (epoch {self.epoch} "
                f"of {self.epochs}): the training before it is not repeated."
            )

    def begin_run(self, run: Run) -> bool:
        """True if an earlier attempt finished this run: its students and series are restored."""
        self.run = run
        return self.checkpoints.begin_run(run)

    def begin_epoch(self, num_samples: int) -> None:
        """The run's next epoch, its samples shuffled: the job's next."""
        self.run.begin_epoch(num_samples)
        self.epoch += 1

    @property
    def where(self) -> str:
        """Where the job is, for its messages."""
        return f"at epoch {self.epoch}, step {self.step}"

    def tick(self) -> None:
        """A step of the run begins: the job's next."""
        halt = Halt(self.ranks.largest(self._halt_here()))  # one all-reduce a step, over several ranks
        if halt is Halt.CANCEL:
            raise JobCancelled(f"stopped at step {self.step} of {self.total_steps}")
        if halt is Halt.TIME_LIMIT or self.checkpoints.due():
            self.checkpoints.save(self.epoch, self.step, self.run.state_dict())
        if halt is Halt.TIME_LIMIT:
            raise time_limit_exceeded(
                f"at step {self.step} of {self.total_steps} (epoch {self.epoch} of {self.epochs}); what it "
                "had trained is kept as its checkpoint"
            )
        self.run.batch += 1
        self.step += 1
        self.reporter.progress(self.epoch, self.epochs, self.step, self.total_steps)

    def _halt_here(self) -> Halt:
        if self.reporter.should_stop():
            return Halt.CANCEL
        if self.deadline is not None and time.time() >= self.deadline:
            return Halt.TIME_LIMIT
        return Halt.NONE

    def end_epoch(self) -> None:
        self.run.end_epoch()

    def end_run(self) -> None:
        self.checkpoints.end_run(self.run, self.epoch, self.step)
        self.run = None


def steps_per_epoch(setup: Setup, job: EngineJob) -> int:
    return setup.ranks.steps(len(setup.train), job.training.batch_size)


def train_cohort(
    setup: Setup, students: list[Student], job: EngineJob, reporter: Reporter, clock: Clock, name: str = ""
) -> list[dict]:
    """Train the students together against the teachers; with several, each also learns from the
    others' softened outputs (deep mutual learning). Returns the per-epoch series it reported.

    A job's main run reports under plain metric names; its other runs (`name`: `trial2`, `generation2`)
    under `<name>_<metric>`."""
    return train_run(setup, start_run(setup, students, job), job, reporter, clock, name)


def start_run(setup: Setup, students: list[Student], job: EngineJob) -> Run:
    """A run of the students, at its first step: their optimizers and schedules over the job's epochs."""
    config, epoch_steps = job.training, steps_per_epoch(setup, job)
    total_steps, warmup_steps = config.epochs * epoch_steps, round(config.warmup_epochs * epoch_steps)
    learners = [
        start_learner(setup, student, config, total_steps=total_steps, warmup_steps=warmup_steps)
        for student in students
    ]
    generator = torch.Generator().manual_seed(config.seed)
    return Run(learners, generator, steps_per_epoch=epoch_steps, total_steps=total_steps)


def start_learner(
    setup: Setup, student: Student, config: TrainingConfig, *, total_steps: int, warmup_steps: int
) -> Learner:
    parameters = [*student.model.parameters(), *student.objective.parameters()]
    # Of a LoRA student, its adapters: its other weights are frozen.
    optimizer = make_optimizer([p for p in parameters if p.requires_grad], config)
    return Learner(
        student,
        model=setup.ranks.parallel(student.model),
        objective=setup.ranks.parallel(student.objective),
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config.lr_schedule, total_steps, warmup_steps),
        scaler=setup.precision.scaler(),
    )


@dataclass(frozen=True)
class EpochTask:
    """What an epoch of a run does for the kind of model it trains (a classifier, `CLASSIFICATION`; a causal
    language model, `lm_loop.LANGUAGE_MODEL`): its steps, the values it reports after them (the first
    student's losses and validation scores) and their summary in words."""

    train_epoch: Callable[[Any, Run, EngineJob, Clock], None]  # (setup, run, job, clock)
    epoch_values: Callable[[Any, list[Learner], int], dict[str, float]]  # (setup, learners, batch_size)
    summary: Callable[[int, int, dict[str, float], str], str]  # (epoch, epochs, values, run name)


def train_run(
    setup: Setup,
    run: Run,
    job: EngineJob,
    reporter: Reporter,
    clock: Clock,
    name: str = "",
    until: int | None = None,
    task: EpochTask | None = None,
) -> list[dict]:
    """Train the run from the epoch it reached to epoch `until` (default: the job's last), an epoch as
    `task` says (default: a classifier's); returns the points it reported on the way. To the checkpoints
    each call is a run of its own."""
    until, task = until or job.training.epochs, task or CLASSIFICATION
    reported = len(run.series)
    if clock.begin_run(run):
        return run.series[reported:]
    while run.epoch < until:
        if run.order is None:
            clock.begin_epoch(len(setup.train))
        task.train_epoch(setup, run, job, clock)
        values = task.epoch_values(setup, run.learners, job.training.batch_size)
        if job.distillation.final_temperature is not None:
            values["temperature"] = temperature_at(job.distillation, run.step, run.total_steps)
        reporter.event(task.summary(run.epoch + 1, until, values, name))
        values = {f"{name}_{metric}" if name else metric: value for metric, value in values.items()}
        reporter.metrics(clock.epoch, clock.step, values)
        run.series += [
            {"step": clock.step, "epoch": clock.epoch, "name": n, "value": v} for n, v in values.items()
        ]
        clock.end_epoch()
    clock.end_run()
    return run.series[reported:]


def train_epoch(setup: Setup, run: Run, job: EngineJob, clock: Clock) -> None:
    """The rest of the run's epoch, from the batch it reached."""
    config, distillation, precision = job.training, job.distillation, setup.precision
    memory = memory_format(job.student_architecture, setup.device)
    for student in run.students:
        student.model.train()
    for index in setup.ranks.batches(run.order, config.batch_size, run.batch):
        clock.tick()
        x, y = (None if t is None else t.to(setup.device, non_blocking=True) for t in setup.train.take(index))
        x = formatted(augment(x, config.augmentation, run.generator), memory)
        temperature = temperature_at(distillation, run.step, run.total_steps)
        with precision.autocast():
            teachers = setup.teacher_batch(x, index, run.generator)
            logits = [compiled_call(learner.model, x, clock.reporter) for learner in run.learners]
        for k, learner in enumerate(run.learners):
            with precision.autocast():
                terms = learner.objective(
                    logits[k], teachers.outputs, y, temperature, learner.student.taps.outputs, teachers.layers
                )
                if len(run.learners) > 1:
                    terms = terms | mutual_terms(
                        logits, k, temperature, distillation.mutual_weight, terms["loss"]
                    )
            losses = loss_values(terms, setup.ranks)
            if not math.isfinite(losses["loss"]):
                raise divergence(losses["loss"], x, teachers.outputs, temperature, clock, job)
            learner.descend(terms["loss"])
            learner.means.add(losses, weight=len(x))


def mutual_terms(logits: list[Tensor], k: int, temperature: float, weight: float, loss: Tensor) -> dict:
    """Student k's KL to its peers' (detached) mean softened distribution, added to its loss."""
    peers = torch.stack([other.detach() for j, other in enumerate(logits) if j != k])
    peer_outputs = TeacherOutputs(peers, torch.full((len(peers),), 1 / len(peers), device=peers.device))
    mutual = kl_loss(ResponseBatch(logits[k], peer_outputs, temperature))
    return {"loss": loss + weight * mutual, "mutual_loss": mutual}


def epoch_values(setup: Setup, learners: list[Learner], batch_size: int) -> dict:
    """The first student's losses and scores under plain names, its peers' as `peer<k>_…`, and how
    often the whole cohort agrees."""
    first = learners[0]
    values = first.means.means() | validation_scores(setup, first.student.model, batch_size)
    if len(learners) == 1:
        return values
    models = [learner.student.model for learner in learners]
    predictions = [predict(model, setup.validation.x, batch_size, setup.device).argmax(1) for model in models]
    for k, learner in enumerate(learners[1:], start=1):
        peer = {"loss": learner.means.means()["loss"]} | validation_scores(setup, models[k], batch_size)
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
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, schedule, total_steps, warmup_steps)
    )


def learning_rate_factor(step: int, schedule: str, total_steps: int, warmup_steps: int) -> float:
    """The learning rate's factor at a step (0-based): rising linearly from 0 over the warm-up's steps, then
    1 throughout, or a cosine or a straight line from 1 down to 0 at the last step. A run shorter than its
    warm-up ends before the factor reaches 1."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(step - warmup_steps, total_steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def cpu_copy(state):
    """A copy of the state (tensors, and dicts and lists of them) that later training cannot change."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {name: cpu_copy(value) for name, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(cpu_copy(value) for value in state)
    return state


def loss_values(terms: dict[str, Tensor], ranks: Ranks) -> dict[str, float]:
    """The step's loss terms as floats (the ranks' mean), in one device-to-host copy."""
    values = ranks.mean(torch.stack([term.detach().float() for term in terms.values()])).tolist()
    return dict(zip(terms, values, strict=True))


def divergence(
    loss: float, x: Tensor, teachers: TeacherOutputs, temperature: float, clock: Clock, job: EngineJob
) -> JobFailed:
    """Why the loss of the batch `x` is not finite, as far as the batch tells: the teacher, the data's
    scale, or the training itself."""
    where, learning_rate = clock.where, job.training.learning_rate
    if not torch.isfinite(teachers.logits).all():
        return JobFailed(
            "loss_diverged",
            f"the teacher produced NaN or infinite logits {where}, so the loss is {loss}: check the "
            "teacher's weights and the input data",
        )
    scale = x.abs().max().item() if x.is_floating_point() else 0.0
    if scale > LARGE_INPUT:
        return JobFailed(
            "loss_diverged",
            f"the loss became {loss} {where}: the training inputs reach {scale:.3g} in magnitude, too large "
            "to train on. Standardize them (zero mean, unit variance per feature) and upload them again; a "
            f"lower learning_rate (now {learning_rate}) would not help",
        )
    return training_diverged(loss, temperature, clock, job)


def training_diverged(loss: float, temperature: float, clock: Clock, job: EngineJob) -> JobFailed:
    """A loss that is not finite where neither the teacher nor the data is to blame."""
    return JobFailed(
        "loss_diverged",
        f"the loss became {loss} {clock.where}, at temperature {temperature:.3g}: training diverged. Try a "
        f"lower learning_rate (now {job.training.learning_rate})",
    )


def validation_scores(setup: Setup, student: nn.Module, batch_size: int) -> dict[str, float]:
    student_logits = predict(student, setup.validation.x, batch_size, setup.device)
    scores = classification_metrics(setup.teacher_validation_logits, student_logits, setup.validation.y)
    values = {"validation_agreement": scores["agreement"]}
    if scores["student_accuracy"] is not None:
        values = {"validation_accuracy": scores["student_accuracy"]} | values
    return values


def epoch_summary(epoch: int, epochs: int, values: dict[str, float], run: str) -> str:
    parts = [f"loss {values['loss']:.4f}"]
    if "validation_accuracy" in values:
        parts.append(f"validation accuracy {values['validation_accuracy']:.2%}")
    parts.append(f"agreement with the teacher {values['validation_agreement']:.2%}")
    if "mutual_agreement" in values:
        parts.append(f"students agree on {values['mutual_agreement']:.2%}")
    return epoch_line(epoch, epochs, run, parts)


def epoch_line(epoch: int, epochs: int, run: str, parts: list[str]) -> str:
    """`Epoch 2/3: ...`, or `Trial2 Epoch 2/3: ...` for a run with a name."""
    return f"{run.capitalize() + ' ' if run else ''}Epoch {epoch}/{epochs}: " + ", ".join(parts)


CLASSIFICATION = EpochTask(train_epoch, epoch_values, epoch_summary)
