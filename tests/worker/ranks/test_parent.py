"""What the task makes of its ranks' ending: rank 0's result, the lowest rank's failure as the exception a
one-device job raises, or a lost training process when no rank said why."""

from pathlib import Path

import pytest

from engine.pipeline import DistillResult
from engine.plan.errors import JobCancelled, JobFailed
from worker.ranks.parent import TrainingProcessLost, rank_outcome
from worker.ranks.protocol import Failure, RankFailed, rank_folder, write_result


def rank_folder_made(out_dir: Path, rank: int) -> Path:
    rank_folder(out_dir, rank).mkdir(exist_ok=True)
    return rank_folder(out_dir, rank)


def test_rank_0s_result_is_the_jobs(tmp_path):
    artifacts = {"student.pt2": rank_folder(tmp_path, 0) / "student.pt2"}
    written = DistillResult(metrics={"agreement": 1.0}, series=[], artifacts=artifacts)
    write_result(rank_folder_made(tmp_path, 0), written)
    result = rank_outcome(tmp_path, 0, out_of_memory=False)
    assert result.metrics == {"agreement": 1.0}
    assert result.artifacts == {"student.pt2": rank_folder(tmp_path, 0) / "student.pt2"}


@pytest.mark.parametrize(
    "error, raised",
    [
        (JobCancelled("stopped at step 3 of 9"), JobCancelled),
        (JobFailed("loss_diverged", "the loss became nan"), JobFailed),
        (ValueError("surprise"), RankFailed),
    ],
)
def test_the_lowest_failing_rank_says_what_ended_the_job(tmp_path, error, raised):
    Failure.of(ValueError("later"), 3).write(rank_folder_made(tmp_path, 3))
    Failure.of(error, 1).write(rank_folder_made(tmp_path, 1))
    with pytest.raises(raised) as caught:
        rank_outcome(tmp_path, 1, out_of_memory=False)
    assert Failure.of(caught.value, 1).message.endswith(str(error))
    if raised is JobFailed:
        assert caught.value.code == "loss_diverged"


def test_ranks_that_end_without_a_word_lost_their_training_process(tmp_path):
    with pytest.raises(TrainingProcessLost) as caught:
        rank_outcome(tmp_path, 1, out_of_memory=True)
    assert caught.value.out_of_memory
    assert "torchrun exit code 1" in caught.value.how
