"""The `auto` search: trials that choose the values a job sets to `auto`, rung by rung as `search_space`
plans them. Where the first rung cannot try every combination, TPE (Bergstra et al. 2011, Optuna's
sampler, seeded by the job) draws its candidates, each guided by the results before it.

Every trial is a fresh student of the job's seed and a run of its own (`trial<n>`), so a resumed job
replays the trials its last attempt finished, and the sampler, told the same results, draws the same
candidates after them. The choice is the best validation accuracy of the last rung; a McNemar test on
the validation samples says whether it is really better than the runner-up. Trials follow the run's
schedule, stopped at their rung's epochs, so the job can go on with the one it chose (`Trial.run`).
"""

import math
from dataclasses import dataclass

import optuna
from torch import Tensor

from engine.evaluate import predict
from engine.plan.search_space import (
    AUTO_FIELDS,
    Rung,
    combination_count,
    combinations,
    continues_trial,
    plan_rungs,
    search_budget,
    search_cost,
    search_space,
)
from engine.plan.specs import EngineJob
from engine.preparation import Setup
from engine.reporting import Reporter
from engine.train.loop import Clock, Run, start_run, train_run
from engine.train.students import build_student

SEPARATED_P = 0.05  # McNemar's p below which the best trial counts as better than the runner-up


@dataclass
class Trial:
    number: int
    rung: int
    epochs: int
    values: dict  # every searched field's value
    correct: Tensor  # which validation samples it classified right
    run: Run | None = None  # where it stopped, for the job to go on from: the last rung's, if it may

    @property
    def accuracy(self) -> float:
        return self.correct.float().mean().item()

    def release(self) -> None:
        """Let its student go: the job will not go on from it."""
        if self.run is not None:
            self.run.students[0].taps.remove()
            self.run = None

    def record(self) -> dict:
        return {
            "trial": self.number,
            "rung": self.rung,
            "epochs": self.epochs,
            **self.values,
            "validation_accuracy": self.accuracy,
        }


class CandidateDraws:
    """The first rung's candidates: every combination when the rung holds them all, else TPE's draws
    (its first third at random), never the same combination twice."""

    def __init__(self, space: dict[str, list], trials: int, seed: int):
        self.space, self.untried = space, combinations(space)
        self.study = None
        if trials < len(self.untried):
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, trials // 3))
            self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.results: dict[tuple, float] = {}
        self.asked: optuna.Trial | None = None

    def draw(self) -> dict:
        if self.study is not None:
            for _ in range(100):
                self.asked = self.study.ask()
                values = {name: self.asked.suggest_categorical(name, c) for name, c in self.space.items()}
                if tuple(values.values()) not in self.results:
                    return values
                self.study.tell(self.asked, self.results[tuple(values.values())])  # a repeat: known
        return self.untried[0]  # every combination in turn, or what TPE keeps missing

    def tell(self, values: dict, accuracy: float) -> None:
        self.results[tuple(values.values())] = accuracy
        self.untried.remove(values)
        if self.asked is not None:
            self.study.tell(self.asked, accuracy)
            self.asked = None


def search_hyperparameters(
    setup: Setup, job: EngineJob, reporter: Reporter, clock: Clock
) -> tuple[EngineJob, dict, list[dict], Trial | None]:
    """The job with the chosen values, the search's record, its trials' series, and the chosen trial if
    the job goes on from it."""
    space, rungs = search_space(job), plan_rungs(job)
    reporter.event(plan_summary(space, rungs, job))
    search = Search(setup, job, reporter, clock, total=sum(rung.trials for rung in rungs))
    first_trials = rungs[0].trials if rungs else 0
    draws = CandidateDraws(space, first_trials, job.training.seed)
    for _ in range(first_trials):
        values = draws.draw()
        draws.tell(values, search.run(values, rungs, 0).accuracy)
    last = search.trials
    for index in range(1, len(rungs)):
        last = [search.run(trial.values, rungs, index) for trial in best(last, rungs[index].trials)]
    chosen = best(last, 2) if last else []
    values = chosen[0].values if chosen else {name: values[0] for name, values in space.items()}
    kept = chosen[0] if chosen and chosen[0].run is not None else None
    for trial in last:
        if trial is not kept:
            trial.release()
    record = search.record(values, chosen, kept)
    reporter.event(f"Chosen by {len(search.trials)} trials: {describe(values)}{continuation(kept)}")
    if record["separated"] is False:
        reporter.event(not_separated(chosen, record["p_value"]), "warning")
    for message in at_the_edge(values, space):
        reporter.event(message)
    return with_values(job, values), record, search.series, kept


class Search:
    """The trials run so far, and how to run one."""

    def __init__(self, setup: Setup, job: EngineJob, reporter: Reporter, clock: Clock, total: int):
        self.setup, self.job, self.reporter, self.clock, self.total = setup, job, reporter, clock, total
        self.trials: list[Trial] = []
        self.series: list[dict] = []

    def run(self, values: dict, rungs: list[Rung], index: int) -> Trial:
        """Train a trial of `values` in rung `index` of `rungs`, keeping its run if the job may go on
        from it."""
        setup, job, rung = self.setup, self.job, rungs[index]
        number, rung_number = len(self.trials) + 1, index + 1
        trial_job = with_values(job, values)
        student = build_student(setup, trial_job, job.student_architecture, job.training.seed, self.reporter)
        run = start_run(setup, [student], trial_job)
        run.continued = index == len(rungs) - 1 and continues_trial(job)
        name = f"trial{number}"
        self.series += train_run(setup, run, trial_job, self.reporter, self.clock, name, rung.epochs)
        logits = predict(student.model, setup.validation.x, job.training.batch_size, setup.device)
        correct = logits.argmax(dim=-1) == setup.validation.y
        trial = Trial(number, rung_number, rung.epochs, values, correct, run)
        if not run.continued:
            trial.release()
        self.trials.append(trial)
        self.reporter.event(
            f"Trial {number} of {self.total} (rung {rung_number}, {rung.epochs} epochs): {describe(values)}: "
            f"validation accuracy {trial.accuracy:.2%}"
        )
        return trial

    def record(self, values: dict, chosen: list[Trial], kept: Trial | None) -> dict:
        p_value = mcnemar_p(chosen[0].correct, chosen[1].correct) if len(chosen) == 2 else None
        job = self.job
        fixed = {name: field.value(job) for name, field in AUTO_FIELDS.items()}
        return {
            **(fixed | values),
            "trials": [trial.record() for trial in self.trials],
            "budget_epochs": search_budget(job),
            "spent_epochs": sum(trial.epochs for trial in self.trials) - (kept.epochs if kept else 0),
            "continued_trial": kept.number if kept else None,
            "p_value": p_value,
            "separated": None if p_value is None else p_value < SEPARATED_P,
        }


def best(trials: list[Trial], count: int) -> list[Trial]:
    """The `count` most accurate, the earlier first among equals."""
    return sorted(trials, key=lambda trial: (-trial.accuracy, trial.number))[:count]


def mcnemar_p(first: Tensor, second: Tensor) -> float:
    """Exact two-sided McNemar test: the chance that two equally good classifiers split the samples only
    one of them gets right at least as unevenly as these two do."""
    only_first = int((first & ~second).sum())
    only_second = int((second & ~first).sum())
    disagreements = only_first + only_second
    if disagreements == 0:
        return 1.0
    tail = sum(math.comb(disagreements, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / 2**disagreements)


def first_trial(job: EngineJob) -> EngineJob:
    """The job with each `auto` field at its first candidate: one a student can be built for (the job
    itself where nothing is searched)."""
    space = search_space(job)
    return with_values(job, combinations(space)[0]) if space else job


def with_values(job: EngineJob, values: dict) -> EngineJob:
    updates = {}
    for name, value in values.items():
        updates.setdefault(AUTO_FIELDS[name].section, {})[name] = value
    return job.model_copy(
        update={name: getattr(job, name).model_copy(update=update) for name, update in updates.items()}
    )


def describe(values: dict) -> str:
    shown = {name: f"{value:g}" if isinstance(value, float) else str(value) for name, value in values.items()}
    return ", ".join(f"{'T' if name == 'temperature' else name}={value}" for name, value in shown.items())


def plan_summary(space: dict[str, list], rungs: list[Rung], job: EngineJob) -> str:
    plan = ", then ".join(f"{rung.trials} trials of {rung.epochs} epochs" for rung in rungs) or "no trial"
    combinations = combination_count(space)
    continued = continues_trial(job)
    spent, budget = search_cost(rungs, continued), search_budget(job)
    goes_on = ", the student going on from the best of the last rung" if continued and rungs else ""
    return (
        f"Search over {' x '.join(space)} ({combinations} combinations): {plan}{goes_on}; {spent} of "
        f"{budget} epochs"
    )


def continuation(kept: Trial | None) -> str:
    if kept is None:
        return ""
    return f"; the student goes on from trial {kept.number}, {kept.epochs} epochs in"


def at_the_edge(values: dict, space: dict[str, list]) -> list[str]:
    """A note for each numeric value chosen at the end of its candidates: the best may lie beyond them."""
    notes = []
    for name, value in values.items():
        field = AUTO_FIELDS[name]
        if not field.numeric:
            continue
        low, high = min(space[name]), max(space[name])
        if low < high and value in (low, high):
            side = "largest" if value == high else "smallest"
            notes.append(
                f"{describe({name: value})} is the {side} of the candidates: a value beyond it may do "
                f"better. To find out, add one to distillation.search.{field.search_list}."
            )
    return notes


def not_separated(chosen: list[Trial], p_value: float) -> str:
    first, second = chosen
    return (
        f"The search cannot tell its two best apart: {describe(first.values)} ({first.accuracy:.2%}) and "
        f"{describe(second.values)} ({second.accuracy:.2%}) differ no more than chance would make them "
        f"(McNemar p = {p_value:.2f} on the validation samples they disagree on): the choice between them "
        "is a coin flip. A larger validation set or distillation.search.budget_epochs would separate them."
    )
