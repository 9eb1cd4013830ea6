"""launch.json gives every rank the settings and files the task had, secrets included."""

from pathlib import Path

from core.config import Settings
from engine.plan.specs import JobFiles
from worker.ranks.protocol import Launch


def test_a_launch_reads_back_as_written(tmp_path):
    teacher, train = Path("/jobs/1/teacher.safetensors"), Path("/jobs/1/train.safetensors")
    written = Launch(
        settings=Settings(home=tmp_path, metrics_token="a-token-of-16-or-more", checkpoint_seconds=7.0),
        job_id="job_1",
        files=JobFiles(teachers=[teacher], train=train, digests={teacher: "ab" * 32}),
        file_ids=["file_1", "file_2"],
        deadline=1_900_000_000.5,
    )
    read = Launch.read(written.write(tmp_path))
    assert read == written
    assert read.settings.metrics_token.get_secret_value() == "a-token-of-16-or-more"
