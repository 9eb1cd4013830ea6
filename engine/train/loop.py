"""The training loop: one or several students (a cohort) against the frozen teachers, epoch by epoch."""

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from engine.data.augment import augment
from engine.evaluate import classification_metrics, predict
from engine.losses.functions import ResponseBatch, TeacherOutputs, kl_loss, scheduled_temperature
from engine.plan.errors import JobCancelled, JobFailed
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
class Run:
    """One call of `train_cohort`, with all a checkpoint needs to continue it from the batch it reached."""

    cohort: list[Student]
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LambdaLR]
    generator: torch.Generator  # the shuffle, augmentation and teacher draws: independent of model RNG
    scalers: list[torch.amp.GradScaler | None] = field(default_factory=list)  # float16's, per student
    epoch: int = 0  # epochs done
    order: Tensor | None = None  # this epoch's sample order; None between epochs
    batch: int = 0  # batches of this epoch done
    step: int = 0  # steps of this run done: where the temperature and learning-rate schedules are
    means: list[RunningMeans] = field(default_factory=list)
    series: list[dict] = field(default_factory=list)  # every point this run reported
    continued: bool = False  # trained in parts (an `auto` trial the job may go on with): see finished_state

    def begin_epoch(self, num_samples: int) -> None:
        self.order = torch.randperm(num_samples, generator=self.generator)
        self.batch = 0
        self.means = [RunningMeans() for _ in self.cohort]

    def end_epoch(self) -> None:
        self.epoch, self.order = self.epoch + 1, None

    def students_state(self) -> list[dict]:
        return [{"model": s.model.state_dict(), "objective": s.objective.state_dict()} for s in self.cohort]

    def state_dict(self) -> dict:
        return {
            "students": self.students_state(),
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "scalers": [None if scaler is None else scaler.state_dict() for scaler in self.scalers],
            "generator": self.generator.get_state(),
            "epoch": self.epoch, "order": self.order, "batch": self.batch, "step": self.step,
            "means": [{"sums": m.sums, "weight": m.weight} for m in self.means],
            "series": self.series,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self._load_students_and_series(state)
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        for scaler, saved in zip(self.scalers, state["scalers"], strict=True):
            if scaler is not None:
                scaler.load_state_dict(saved)
        self.generator.set_state(state["generator"])
        self.epoch, self.order, self.batch, self.step = (
            state[k] for k in ("epoch", "order", "batch", "step")
        )
        self.means = [RunningMeans(**saved) for saved in state["means"]]

    def finished_state(self) -> dict:
        """The trained students and the series, copied (a later run must not change them); for a run that
        may be continued, everything `state_dict` holds."""
        state = (
            self.state_dict()
            if self.continued
            else {"students": self.students_state(), "series": self.series}
        )
        return cpu_copy(state)

    def load_finished_state(self, state: dict) -> None:
        if "optimizers" in state:  # a run that may be continued kept everything (`finished_state`)
            self.load_state_dict(state)
        else:
            self._load_students_and_series(state)

    def _load_students_and_series(self, state: dict) -> None:
        for student, saved in zip(self.cohort, state["students"], strict=True):
            student.model.load_state_dict(saved["model"])
            student.objective.load_state_dict(saved["objective"])
        self.series = list(state["series"])


class Clock:
    """Counts steps and epochs across every training run of a job (trials, peers, generations), for
    progress; at every step, checks for cancellation and saves a checkpoint when one is due.

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
    ):
        self.reporter, self.epochs, self.total_steps = reporter, epochs, epochs * steps_per_epoch
        self.checkpoints, self.ranks = checkpoints, ranks
        self.run: Run | None = None
        restored = checkpoints.restored
        self.epoch, self.step = (0, 0) if restored is None else (restored.epoch, restored.step)
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

    def tick(self) -> None:
        if self.ranks.any(self.reporter.should_stop()):
            raise JobCancelled(f"stopped at step {self.step} of {self.total_steps}")
        if self.checkpoints.due():
            self.checkpoints.save(self.epoch, self.step, self.run.state_dict())
        self.step += 1
        self.reporter.progress(self.epoch, self.epochs, self.step, self.total_steps)

    def end_run(self) -> None:
        self.checkpoints.end_run(self.run, self.epoch, self.step)
        self.run = None


def steps_per_epoch(setup: Setup, job: EngineJob) -> int:
    return setup.ranks.steps(len(setup.train), job.training.batch_size)


def train_cohort(
    setup: Setup, cohort: list[Student], job: EngineJob, reporter: Reporter, clock: Clock, name: str = ""
) -> list[dict]:
    """Train the students together against the teachers; with several, each also learns from the
    others' softened outputs (deep mutual learning). Returns the per-epoch series it reported.

    A job's main run reports under plain metric names; its other runs (`name`: `trial2`, `generation2`)
    under `<name>_<metric>`."""
    return train_run(setup, start_run(setup, cohort, job), job, reporter, clock, name)


def start_run(setup: Setup, cohort: list[Student], job: EngineJob) -> Run:
    """A run of the students, at its first step: their optimizers and schedules over the job's epochs."""
    config = job.training
    optimizers = [make_optimizer([*s.model.parameters(), *s.objective.parameters()], config) for s in cohort]
    epoch_steps = steps_per_epoch(setup, job)
    run_steps, warmup_steps = config.epochs * epoch_steps, round(config.warmup_epochs * epoch_steps)
    schedulers = [make_scheduler(o, config.lr_schedule, run_steps, warmup_steps) for o in optimizers]
    scalers = [setup.precision.scaler() for _ in cohort]
    return Run(cohort, optimizers, schedulers, torch.Generator().manual_seed(config.seed), scalers)


def train_run(
    setup: Setup,
    run: Run,
    job: EngineJob,
    reporter: Reporter,
    clock: Clock,
    name: str = "",
    until: int | None = None,
) -> list[dict]:
    """Train the run from the epoch it reached to epoch `until` (default: the job's last); returns the
    points it reported on the way. To the checkpoints each call is a run of its own."""
    config = job.training
    run_steps, until = config.epochs * steps_per_epoch(setup, job), until or config.epochs
    reported = len(run.series)
    if clock.begin_run(run):
        return run.series[reported:]
    learners = [(setup.ranks.parallel(s.model), setup.ranks.parallel(s.objective)) for s in run.cohort]
    while run.epoch < until:
        if run.order is None:
            run.begin_epoch(len(setup.train))
            clock.epoch += 1
        train_epoch(setup, run, learners, job, clock, run_steps)
        values = epoch_values(setup, run.cohort, run.means, config.batch_size)
        if job.distillation.final_temperature is not None:
            values["temperature"] = temperature_at(job.distillation, run.step, run_steps)
        reporter.event(epoch_summary(run.epoch + 1, until, values, name))
        values = {f"{name}_{metric}" if name else metric: value for metric, value in values.items()}
        reporter.metrics(clock.epoch, clock.step, values)
        run.series += [
            {"step": clock.step, "epoch": clock.epoch, "name": n, "value": v} for n, v in values.items()
        ]
        run.end_epoch()
    clock.end_run()
    return run.series[reported:]


def train_epoch(
    setup: Setup,
    run: Run,
    learners: list[tuple[nn.Module, nn.Module]],
    job: EngineJob,
    clock: Clock,
    run_steps: int,
) -> None:
    """The rest of the run's epoch, from the batch it reached. `learners`: each student's model and
    objective as the steps call them (`Ranks.parallel`)."""
    config, distillation, precision = job.training, job.distillation, setup.precision
    memory = memory_format(job.student_architecture, setup.device)
    for student in run.cohort:
        student.model.train()
    for index in setup.ranks.batches(run.order, config.batch_size, run.batch):
        clock.tick()
        x, y = (None if t is None else t.to(setup.device, non_blocking=True) for t in setup.train.take(index))
        x = formatted(augment(x, config.augmentation, run.generator), memory)
        temperature = temperature_at(distillation, run.step + 1, run_steps)
        with precision.autocast():
            teachers = setup.teacher_batch(x, index, run.generator)
            logits = [compiled_call(model, x, clock.reporter) for model, _objective in learners]
        for k, (student, (_model, objective), optimizer, scheduler, scaler) in enumerate(
            zip(run.cohort, learners, run.optimizers, run.schedulers, run.scalers, strict=True)
        ):
            with precision.autocast():
                terms = objective(
                    logits[k], teachers.outputs, y, temperature, student.taps.outputs, teachers.layers
                )
                if len(run.cohort) > 1:
                    terms = terms | mutual_terms(
                        logits, k, temperature, distillation.mutual_weight, terms["loss"]
                    )
            losses = loss_values(terms, setup.ranks)
            if not math.isfinite(losses["loss"]):
                raise divergence(losses["loss"], x, teachers.outputs, temperature, clock, job)
            optimizer.zero_grad(set_to_none=True)
            descend(terms["loss"], optimizer, scaler)
            scheduler.step()
            run.means[k].add(losses, weight=len(x))
        run.batch, run.step = run.batch + 1, run.step + 1


def descend(loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """One optimizer step down the loss's gradient; with float16's scaler, skipped where it overflowed."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def mutual_terms(logits: list[Tensor], k: int, temperature: float, weight: float, loss: Tensor) -> dict:
    """Student k's KL to its peers' (detached) mean softened distribution, added to its loss."""
    peers = torch.stack([other.detach() for j, other in enumerate(logits) if j != k])
    peer_outputs = TeacherOutputs(peers, torch.full((len(peers),), 1 / len(peers), device=peers.device))
    mutual = kl_loss(ResponseBatch(logits[k], peer_outputs, temperature))
    return {"loss": loss + weight * mutual, "mutual_loss": mutual}


def epoch_values(setup: Setup, cohort: list[Student], means: list[RunningMeans], batch_size: int) -> dict:
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
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, schedule, total_steps, warmup_steps)
    )


def learning_rate_factor(step: int, schedule: str, total_steps: int, warmup_steps: int) -> float:
    """The learning rate's factor at a step (0-based): rising linearly from 0 over the warm-up's steps, then
    1 throughout, or a cosine from 1 down to 0 at the last step. A run shorter than its warm-up ends before
    the factor reaches 1."""
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "cosine":
        progress = min(step - warmup_steps, total_steps - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * progress))
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
    where, learning_rate = f"at epoch {clock.epoch}, step {clock.step}", job.training.learning_rate
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
    return JobFailed(
        "loss_diverged",
        f"the loss became {loss} {where}, at temperature {temperature:.3g}: training diverged. Try a lower "
        f"learning_rate (now {learning_rate})",
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
    return f"{run.capitalize() + ' ' if run else ''}Epoch {epoch}/{epochs}: " + ", ".join(parts)
