"""The `auto` search: its plan within the budget, its rungs, TPE's draws, and what it tells the user."""

from itertools import pairwise

import pytest
import torch

from engine.pipeline import JobFiles, run_distillation
from engine.plan.search_space import Rung, search_cost, search_space, successive_halving
from engine.train.search import at_the_edge, mcnemar_p
from tests.engine.factories import RecordingReporter, series


@pytest.mark.parametrize(
    ("candidates", "budget", "epochs", "first", "plan"),
    [
        (5, 20, 20, 1, [(5, 1), (2, 7)]),  # every candidate, then the best two share the rest
        (10, 20, 20, 1, [(9, 1), (3, 3)]),
        (90, 100, 20, 1, [(31, 1), (11, 3), (4, 9)]),
        (90, 1000, 50, 1, [(90, 1), (30, 3), (10, 9), (4, 27), (2, 50)]),  # the last rung: the run's length
        (5, 10, 10, 1, [(5, 2)]),  # no room for a second rung: one, sharing the budget
        (90, 10, 10, 1, [(10, 1)]),
        (2, 10, 10, 1, [(2, 5)]),  # two candidates cannot be halved
        (5, 20, 20, 3, [(5, 4)]),
        (1, 20, 20, 1, []),  # nothing to choose between
    ],
)
def test_successive_halving_plans_the_deepest_rungs_the_budget_allows(
    candidates, budget, epochs, first, plan
):
    assert successive_halving(candidates, budget=budget, epochs=epochs, first=first, factor=3) == [
        Rung(*rung) for rung in plan
    ]


@pytest.mark.parametrize(
    ("candidates", "budget", "epochs", "plan"),
    [
        (5, 10, 10, [(5, 1), (2, 5)]),  # 5 + 2 x 5 - the 5 epochs the student goes on from
        (30, 10, 10, [(6, 1), (2, 4)]),  # as many first trials as leave the last rung 3 epochs
        (90, 100, 20, [(36, 1), (12, 3), (4, 9)]),
        (2, 10, 10, [(2, 10)]),  # both train the whole run; the better one is the student
        (30, 3, 10, [(4, 1)]),  # one rung: the trial gone on from costs nothing
    ],
)
def test_a_search_the_student_goes_on_from_does_not_pay_for_the_epochs_it_keeps(
    candidates, budget, epochs, plan
):
    rungs = [Rung(*rung) for rung in plan]
    assert (
        successive_halving(candidates, budget=budget, epochs=epochs, first=1, factor=3, continued=True)
        == rungs
    )


@pytest.mark.parametrize("continued", [False, True])
@pytest.mark.parametrize("candidates", [2, 3, 7, 16, 90])
@pytest.mark.parametrize("budget", [4, 9, 20, 55, 300])
def test_a_plan_never_spends_more_than_its_budget_and_each_rung_is_fewer_and_longer(
    candidates, budget, continued
):
    plan = successive_halving(candidates, budget=budget, epochs=20, first=1, factor=3, continued=continued)
    assert search_cost(plan, continued) <= budget
    assert all(later.trials < earlier.trials for earlier, later in pairwise(plan))
    assert all(later.epochs > earlier.epochs for earlier, later in pairwise(plan))
    assert plan[0].trials <= candidates and all(rung.epochs <= 20 for rung in plan)


def test_mcnemar_p_is_the_exact_two_sided_binomial_tail_over_the_disagreements():
    right = torch.tensor([True] * 8 + [False, True])
    wrong = torch.tensor([False] * 8 + [False, True])
    assert mcnemar_p(right, wrong) == pytest.approx(2 / 2**8)  # 8 disagreements, all one way
    first = torch.tensor([True, True, True, False])
    second = torch.tensor([False, False, True, True])
    assert mcnemar_p(first, second) == 1.0  # 2 to 1: 2 * (C(3,0) + C(3,1)) / 2^3, capped
    assert mcnemar_p(first, first) == 1.0


def distill(job, blob_task, out_dir):
    reporter = RecordingReporter()
    result = run_distillation(
        job, JobFiles([blob_task.teacher_path], blob_task.train_path), out_dir, reporter
    )
    return result, reporter


def test_the_best_of_the_first_rung_train_longer_and_the_student_goes_on_from_the_best_of_those(
    make_job, blob_task, tmp_path
):
    search = {"temperatures": [1.0, 4.0], "alphas": [0.2, 0.8], "budget_epochs": 8}
    job = make_job(
        distillation={"temperature": "auto", "alpha": "auto", "search": search}, training={"epochs": 6}
    )
    result, reporter = distill(job, blob_task, tmp_path / "searched")
    record = result.metrics["search"]
    first, second = record["trials"][:4], record["trials"][4:]
    assert [(t["rung"], t["epochs"]) for t in record["trials"]] == [(1, 1)] * 4 + [(2, 4)] * 2
    values = lambda trial: (trial["temperature"], trial["alpha"])  # noqa: E731
    ranked = sorted(first, key=lambda t: (-t["validation_accuracy"], t["trial"]))
    assert [values(t) for t in second] == [values(t) for t in ranked[:2]]
    chosen = max(second, key=lambda t: t["validation_accuracy"])
    assert (record["temperature"], record["alpha"]) == values(chosen)
    assert record["continued_trial"] == chosen["trial"]
    assert record["spent_epochs"] == 8 == record["budget_epochs"]  # 4 x 1 + 2 x 4, less the 4 gone on from
    assert len(series(reporter, "trial5_validation_accuracy")) == 4
    main_epochs = [epoch for epoch, _, values in reporter.metric_calls if "validation_accuracy" in values]
    assert main_epochs == [13, 14]  # its epochs 5 and 6, after the trials' 12
    assert any(m.startswith("Search over temperature x alpha (4 combinations)") for _, m in reporter.events)
    assert reporter.progress_calls[-1][1] == 8 + 6  # progress spans the trials and the run

    fixed = make_job(
        distillation={"temperature": record["temperature"], "alpha": record["alpha"]}, training={"epochs": 6}
    )
    alone, _ = distill(fixed, blob_task, tmp_path / "fixed")
    # going on from the trial is the very run that the fixed values train
    assert result.metrics["student"]["accuracy"] == alone.metrics["student"]["accuracy"]
    assert result.metrics["agreement"] == alone.metrics["agreement"]


def test_tpe_draws_distinct_candidates_and_the_same_ones_for_the_same_seed(make_job, blob_task, tmp_path):
    search = {"temperatures": [1.0, 2.0, 4.0, 8.0], "alphas": [0.2, 0.8], "learning_rates": [1e-2, 3e-2],
              "budget_epochs": 12}  # fmt: skip
    job = make_job(
        distillation={"temperature": "auto", "alpha": "auto", "search": search},
        training={"learning_rate": "auto", "epochs": 2},
    )
    first, _ = distill(job, blob_task, tmp_path / "first")
    again, _ = distill(job, blob_task, tmp_path / "again")
    trials = first.metrics["search"]["trials"]
    drawn = [(t["temperature"], t["alpha"], t["learning_rate"]) for t in trials if t["rung"] == 1]
    assert len(drawn) == 8 == len(set(drawn))  # 8 one-epoch trials of the 16 combinations, then 3 of 2
    assert again.metrics["search"] == first.metrics["search"]
    assert first.metrics["search"]["learning_rate"] in (1e-2, 3e-2)


def test_a_search_that_cannot_separate_its_best_two_says_so(make_job, blob_task, tmp_path):
    search = {"temperatures": [2.0, 2.0001]}  # the same student, all but
    result, reporter = distill(
        make_job(distillation={"temperature": "auto", "search": search}), blob_task, tmp_path
    )
    record = result.metrics["search"]
    assert record["separated"] is False and record["p_value"] > 0.05
    warnings = [message for level, message in reporter.events if level == "warning"]
    assert any(message.startswith("The search cannot tell its two best apart") for message in warnings)


def test_the_soft_loss_can_be_searched_and_the_student_trains_with_the_chosen_one(
    make_job, blob_task, tmp_path
):
    distillation = {"soft_loss": "auto", "search": {"soft_losses": ["kl", "dkd"]}}
    result, reporter = distill(make_job(distillation=distillation), blob_task, tmp_path)
    record = result.metrics["search"]
    assert [trial["soft_loss"] for trial in record["trials"]] == ["kl", "dkd"]
    assert record["soft_loss"] in ("kl", "dkd") and result.metrics["student"]["accuracy"] > 0.9
    assert any(
        message.startswith(f"Chosen by 2 trials: soft_loss={record['soft_loss']}")
        for _, message in reporter.events
    )


def test_standardized_logits_leave_out_the_soft_losses_they_do_not_work_with(make_job):
    job = make_job(distillation={"soft_loss": "auto", "logit_standardization": True})
    assert search_space(job) == {"soft_loss": ["kl", "dkd"]}  # of the default kl, dkd, dist


def test_a_numeric_value_chosen_at_the_end_of_its_candidates_is_pointed_out():
    space = {"temperature": [1.0, 4.0, 16.0], "learning_rate": [1e-3, 3e-3], "alpha": [0.5, 0.7, 0.9],
             "soft_loss": ["kl", "dkd"]}  # fmt: skip
    values = {"temperature": 16.0, "learning_rate": 1e-3, "alpha": 0.7, "soft_loss": "kl"}
    assert at_the_edge(values, space) == [
        "T=16 is the largest of the candidates: a value beyond it may do better. To find out, add one to "
        "distillation.search.temperatures.",
        "learning_rate=0.001 is the smallest of the candidates: a value beyond it may do better. To find "
        "out, add one to distillation.search.learning_rates.",
    ]
    assert at_the_edge({"temperature": 4.0}, {"temperature": [1.0, 4.0, 16.0]}) == []
