"""What an `auto` search tries and for how long, from the job's specs alone (torch-free: the API bounds a
job by its planned epochs when it is submitted).

The search is successive halving (Jamieson & Talwalkar 2016): a first rung of many short trials, then
rungs that train the best of the rung before longer, so that the values chosen are those that end best
rather than those that learn fastest. Every trial follows the run's own schedule, stopped at its rung's
epochs, so a job of the standard method goes on with the trial it chose instead of training its student
again: those epochs are not the search's cost. `plan_rungs` picks the deepest plan that fits the budget.
"""

import itertools
import math
from dataclasses import dataclass

from engine.plan.specs import STANDARDIZABLE_SOFT_LOSSES, EngineJob

MAX_RUNGS = 6


@dataclass(frozen=True)
class Rung:
    trials: int  # how many candidates it trains
    epochs: int  # each, from scratch


@dataclass(frozen=True)
class AutoField:
    """A field a job may set to `auto`, and the list of `distillation.search` its candidates come from."""

    section: str  # of the job: "distillation" or "training"
    name: str
    search_list: str
    numeric: bool = True  # its candidates are ordered: a value beyond their ends may do better

    def value(self, job: EngineJob):
        return getattr(getattr(job, self.section), self.name)


AUTO_FIELDS = {
    field.name: field
    for field in (
        AutoField("distillation", "temperature", "temperatures"),
        AutoField("distillation", "alpha", "alphas"),
        AutoField("training", "learning_rate", "learning_rates"),
        AutoField("distillation", "soft_loss", "soft_losses", numeric=False),
    )
}


def search_space(job: EngineJob) -> dict[str, list]:
    """The candidate values of each field the job sets to `auto`, by field name."""
    return {
        name: candidate_values(job, field)
        for name, field in AUTO_FIELDS.items()
        if field.value(job) == "auto"
    }


def candidate_values(job: EngineJob, field: AutoField) -> list:
    """The field's candidates; for the soft loss, only those that work with standardized logits if the job
    standardizes them."""
    listed = list(getattr(job.distillation.search, field.search_list))
    if field.name == "soft_loss" and job.distillation.logit_standardization:
        return [loss for loss in listed if loss in STANDARDIZABLE_SOFT_LOSSES]
    return listed


def searched(job: EngineJob) -> bool:
    return bool(search_space(job))


def combinations(space: dict[str, list]) -> list[dict]:
    """Every combination of the candidates, in the order of the fields and of their candidates."""
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def combination_count(space: dict[str, list]) -> int:
    return math.prod(len(values) for values in space.values())


def search_budget(job: EngineJob) -> int:
    """The epochs the trials may train together: `search.budget_epochs`, by default the run's own."""
    return job.distillation.search.budget_epochs or job.training.epochs


def continues_trial(job: EngineJob) -> bool:
    """Whether the job's student goes on from the chosen trial (a student trained alone, as trials are)."""
    return job.distillation.method == "standard"


def plan_rungs(job: EngineJob) -> list[Rung]:
    search = job.distillation.search
    return successive_halving(
        combination_count(search_space(job)),
        budget=search_budget(job),
        epochs=job.training.epochs,
        first=search.trial_epochs,
        factor=search.reduction_factor,
        continued=continues_trial(job),
    )


def rung_epochs(rungs: list[Rung]) -> int:
    """The epochs all the rungs' trials train together."""
    return sum(rung.trials * rung.epochs for rung in rungs)


def search_cost(rungs: list[Rung], continued: bool) -> int:
    """The epochs the trials train that the job's student does not go on from."""
    return rung_epochs(rungs) - (rungs[-1].epochs if rungs and continued else 0)


def successive_halving(
    candidates: int, *, budget: int, epochs: int, first: int, factor: int, continued: bool = False
) -> list[Rung]:
    """The deepest plan whose cost (`search_cost`) fits `budget` epochs: rung k trains the best
    ceil(n/factor^k) of the n candidates of the first rung (at least 2, fewer each rung) for
    first*factor^k epochs, and the last rung as long as what is left of the budget allows, up to `epochs`
    (the run the search is for). The first rung tries every candidate, or at least enough for the last
    rung to hold two. With no room for a second rung: one rung of as many candidates as fit. A lone
    candidate needs no trial. `continued`: the job goes on from the best trial of the last rung."""
    if candidates <= 1:
        return []
    for depth in range(MAX_RUNGS, 1, -1):
        plan = _halving(depth, candidates, budget, epochs, first, factor, continued)
        if plan is not None:
            return plan
    trials = max(1, min(candidates, budget // first + continued))
    return [Rung(trials, max(first, _last_rung_epochs(trials, budget, epochs, continued)))]


def _halving(
    depth: int, candidates: int, budget: int, epochs: int, first: int, factor: int, continued: bool
) -> list[Rung] | None:
    lengths = [first * factor**k for k in range(depth)]
    if lengths[-2] >= epochs:
        return None
    fewest = min(candidates, 2 * factor ** (depth - 1))  # the last rung's two, at factor times fewer a rung
    for trials in range(min(candidates, budget // first), fewest - 1, -1):
        counts = [trials] + [max(2, math.ceil(trials / factor**k)) for k in range(1, depth)]
        if any(later >= earlier for earlier, later in itertools.pairwise(counts)):
            continue
        spent = sum(count * length for count, length in zip(counts, lengths[:-1], strict=False))
        last = _last_rung_epochs(counts[-1], budget - spent, epochs, continued)
        if last >= min(epochs, lengths[-1]):
            return [Rung(count, length) for count, length in zip(counts, [*lengths[:-1], last], strict=True)]
    return None


def _last_rung_epochs(trials: int, budget: int, epochs: int, continued: bool) -> int:
    """How long each of `trials` trials may train on `budget` epochs (the continued one's are free), up to
    `epochs`."""
    paid = trials - continued
    return min(epochs, budget // paid) if paid else epochs


def search_epochs(job: EngineJob) -> int:
    """The epochs the job's search adds to its training."""
    return search_cost(plan_rungs(job), continues_trial(job)) if searched(job) else 0
