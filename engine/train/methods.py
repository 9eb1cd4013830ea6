"""Which students a job trains and how: one (standard), a cohort (mutual learning), generations
(born-again), after short trials that pick T and alpha when they are "auto"."""

import copy
import dataclasses
from dataclasses import dataclass, field

from engine.plan.search_space import searched
from engine.plan.sizes import planned_epochs
from engine.plan.specs import EngineJob
from engine.preparation import Setup
from engine.reporting import Reporter
from engine.teachers.ensemble import TeacherEnsemble
from engine.train.checkpoints import JobCheckpoints, QuietWhileReplaying
from engine.train.loop import Clock, steps_per_epoch, train_cohort, train_run
from engine.train.search import search_hyperparameters
from engine.train.students import Student, build_student


@dataclass
class Candidate:
    """A trained student that may become the artifact."""

    name: str  # "student", "peer1", "generation2"
    student: Student
    series: list[dict]


@dataclass
class Trained:
    """What a job's training produced."""

    job: EngineJob  # with the temperature and alpha an `auto` search chose
    candidates: list[Candidate]
    search: dict | None = None  # the `auto` search: the chosen values and every trial
    trial_series: list[dict] = field(default_factory=list)

    @property
    def series(self) -> list[dict]:
        return self.trial_series + [point for candidate in self.candidates for point in candidate.series]


def train_students(
    setup: Setup,
    job: EngineJob,
    student: Student,
    checkpoints: JobCheckpoints,
    reporter: Reporter,
    deadline: float | None = None,
) -> Trained:
    """The students the job's method trains, after the trials of an `auto` search; a resumed job replays
    what its last attempt finished (quietly) and continues from its checkpoint. Past `deadline` (see
    `Clock`) the job fails `time_limit_exceeded`."""
    epochs, epoch_steps = planned_epochs(job), steps_per_epoch(setup, job)
    clock = Clock(reporter, epochs, epoch_steps, checkpoints, setup.ranks, deadline)
    training_reporter = QuietWhileReplaying(reporter, checkpoints)
    distill = METHODS[job.distillation.method]
    if not searched(job):
        return Trained(job, distill(setup, student, job, training_reporter, clock))
    job, search, trial_series, kept = search_hyperparameters(setup, job, training_reporter, clock)
    if kept is not None:  # the standard method: the student goes on from the chosen trial
        series = train_run(setup, kept.run, job, training_reporter, clock)
        return Trained(job, [Candidate("student", kept.run.students[0], series)], search, trial_series)
    student = build_student(setup, job, job.student_architecture, job.training.seed, training_reporter)
    return Trained(job, distill(setup, student, job, training_reporter, clock), search, trial_series)


def distill_standard(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    return [Candidate("student", student, train_cohort(setup, [student], job, reporter, clock))]


def distill_mutual(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    """Deep mutual learning (Zhang et al. 2018), with the teacher's soft targets too when alpha > 0."""
    specs = job.distillation.peers or [job.student_architecture]
    peers = [
        build_student(setup, job, spec, job.training.seed + k, reporter) for k, spec in enumerate(specs, 1)
    ]
    reporter.event(f"Mutual learning: {len(peers) + 1} students train together")
    series = train_cohort(setup, [student, *peers], job, reporter, clock)
    return [Candidate("student", student, series)] + [
        Candidate(f"peer{k}", p, []) for k, p in enumerate(peers, 1)
    ]


def distill_born_again(setup: Setup, student: Student, job: EngineJob, reporter: Reporter, clock: Clock):
    """Born-again networks (Furlanello et al. 2018): each generation, freshly initialised, learns from
    the previous one; the first from the job's teachers."""
    generations = job.distillation.generations
    fresh = job.model_copy(update={"student_init": "random"})
    candidates, taught_by = [], setup
    for generation in range(1, generations + 1):
        if generation > 1:
            spec, seed = job.student_architecture, job.training.seed + generation - 1
            student = build_student(taught_by, fresh, spec, seed, reporter)
        teacher = "the teacher" if generation == 1 else f"generation {generation - 1}"
        reporter.event(f"Generation {generation} of {generations}, taught by {teacher}")
        run = "" if generation == 1 else f"generation{generation}"
        candidates.append(
            Candidate(
                f"generation{generation}",
                student,
                train_cohort(taught_by, [student], job, reporter, clock, run),
            )
        )
        if generation < generations:
            taught_by = student_as_teacher(setup, student, job.training.batch_size, f"generation{generation}")
    return candidates


def student_as_teacher(setup: Setup, student: Student, batch_size: int, name: str) -> Setup:
    """The setup with the trained `student`, frozen, as the only teacher; its outputs over the training set
    computed once where the job's teachers' are."""
    student.taps.remove()
    frozen = copy.deepcopy(student.model).eval().requires_grad_(False)
    teachers = TeacherEnsemble([frozen], [1.0], "mean", [[]])
    logits = teachers.predict(setup.validation.x, batch_size, setup.device)
    cached = setup.cache.private_teachers(teachers, setup.train, name) if setup.cached is not None else None
    return dataclasses.replace(setup, teachers=teachers, teacher_validation_logits=logits, cached=cached)


METHODS = {"standard": distill_standard, "mutual": distill_mutual, "born_again": distill_born_again}
