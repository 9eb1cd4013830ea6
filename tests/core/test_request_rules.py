"""`resolve_job` on its own (no app, no database): the resolved request has every derived field filled in,
the submitted one is left as it was, and a broken rule is a `RequestError` naming the field."""

import pytest

from core.config import Settings
from core.errors import RequestError
from core.job_request import JobCreate, engine_job
from core.models import File, Job
from core.request_rules import check_resumable, resolve_job
from tests.service.helpers import job_request, mlp_spec

FILES = {
    "file-teacher": File(id="file-teacher", purpose="teacher", format="safetensors", bytes=2_000),
    "file-pt2": File(id="file-pt2", purpose="teacher", format="pt2", bytes=9_000),
    "file-train": File(id="file-train", purpose="dataset", format="npz", bytes=5_000),
}


def resolve(request: dict, **settings):
    return resolve_job(JobCreate.model_validate(request), FILES.get, Settings(**settings))


def test_the_resolved_request_is_filled_in_and_the_submitted_one_untouched():
    teacher = {"file_id": "file-teacher", "architecture": mlp_spec(hidden_sizes=[16, 16])}
    submitted = JobCreate.model_validate(
        job_request("file-teacher", "file-train", teacher=teacher, student={"derive": {"width": 0.5}})
    )
    before = submitted.model_dump()
    resolved = resolve_job(submitted, FILES.get, Settings())
    assert submitted.model_dump() == before
    assert resolved.request.teacher.format == "safetensors"
    assert resolved.request.student.architecture.hidden_sizes == [8]
    assert resolved.file_roles == {"file-teacher": "teacher", "file-train": "train"}
    assert engine_job(resolved.request).student_init == "teacher"


@pytest.mark.parametrize(
    ("change", "status", "code", "param"),
    [
        ({"teacher": {"file_id": "file-nope"}}, 404, "not_found", "teacher.file_id"),
        ({"teacher": {"file_id": "file-train"}}, 422, "wrong_file_purpose", "teacher.file_id"),
        ({"teacher": {"file_id": "file-pt2"}, "student": {"derive": {}}}, 422, "architecture_required",
         "student.derive"),
        ({"distillation": {"method": "born_again", "features": [{"teacher": "head", "student": "head"}]}},
         422, "unsupported_combination", "distillation.features"),
    ],
    ids=["missing file", "wrong purpose", "derive from pt2", "engine rule"],
)  # fmt: skip
def test_a_broken_rule_names_the_field(change, status, code, param):
    with pytest.raises(RequestError) as refused:
        resolve(job_request("file-teacher", "file-train", **change))
    assert (refused.value.status, refused.value.code, refused.value.param) == (status, code, param)


def test_a_teacher_in_a_list_is_named_by_its_place():
    teachers = [
        {"file_id": "file-teacher", "architecture": mlp_spec()},
        {"file_id": "file-teacher", "architecture": mlp_spec(num_classes=7)},
    ]
    request = job_request("file-teacher", "file-train", teacher=None, teachers=teachers)
    with pytest.raises(RequestError) as refused:
        resolve(request)
    assert refused.value.code == "incompatible_shapes" and "teachers.1" in refused.value.message


def test_pt2_teachers_follow_the_policy():
    request = job_request("file-pt2", "file-train", teacher={"file_id": "file-pt2"})
    assert resolve(request).request.teacher.format == "pt2"
    with pytest.raises(RequestError) as refused:
        resolve(request, allow_pt2="off")
    assert (refused.value.code, refused.value.param) == ("pt2_not_allowed", "teacher.format")


def timed_out(request: JobCreate, code: str | None = "time_limit_exceeded") -> Job:
    error = None if code is None else {"code": code, "message": "..."}
    status = "succeeded" if code is None else "failed"
    return Job(id="job-earlier", status=status, error=error, request=request.model_dump(mode="json"))


def timed_out_request() -> JobCreate:
    training = {"epochs": 3, "max_seconds": 5}
    return resolve(job_request("file-teacher", "file-train", training=training)).request


def resumed(earlier: JobCreate, **changes) -> JobCreate:
    return JobCreate.model_validate(
        earlier.model_dump(mode="json") | changes | {"resume_from": "job-earlier"}
    )


def test_a_job_goes_on_from_a_timed_out_one_with_more_time_other_gates_and_name():
    earlier = resolve(
        job_request("file-teacher", "file-train", training={"epochs": 3, "max_seconds": 5})
    ).request
    again = resumed(
        earlier,
        name="longer",
        gates=[{"metric": "student.accuracy", "op": ">=", "value": 0.5}],
        training=earlier.training.model_dump() | {"max_seconds": 50},
    )
    check_resumable(again, timed_out(earlier), checkpoint_kept=True)


@pytest.mark.parametrize(
    ("case", "status", "param", "words"),
    [
        ("no such job", 404, "resume_from", "No job with id 'job-earlier'"),
        ("succeeded", 422, "resume_from", "is succeeded: only a job that ran out of time"),
        ("failed otherwise", 422, "resume_from", "is failed (loss_diverged)"),
        ("no checkpoint", 422, "resume_from", "keeps no checkpoint"),
        ("other epochs", 422, "training.epochs", "`training.epochs` differs from job job-earlier's"),
        ("other teacher", 422, "teacher.file_id", "`teacher.file_id` differs"),
    ],
)
def test_a_job_that_cannot_go_on_from_another_is_refused_naming_the_field(case, status, param, words):
    earlier = resolve(
        job_request("file-teacher", "file-train", training={"epochs": 3, "max_seconds": 5})
    ).request
    again, found, kept = resumed(earlier), timed_out(earlier), True
    if case == "no such job":
        found = None
    elif case == "succeeded":
        found = timed_out(earlier, code=None)
    elif case == "failed otherwise":
        found = timed_out(earlier, code="loss_diverged")
    elif case == "no checkpoint":
        kept = False
    elif case == "other epochs":
        again = resumed(earlier, training=earlier.training.model_dump() | {"epochs": 4})
    else:
        again = resumed(earlier, teacher=earlier.teacher.model_dump() | {"file_id": "file-pt2"})
    with pytest.raises(RequestError) as refused:
        check_resumable(again, found, checkpoint_kept=kept)
    assert (refused.value.status, refused.value.param) == (status, param)
    assert words in refused.value.message
