"""Job requests for the distillation methods: accepted with defaults filled in, or a 422 naming the field."""

import pytest

from tests.service.helpers import assert_error, job_request, mlp_spec, pt2_teacher, upload_ok


def create(client, request):
    return client.post("/v1/jobs", json=request)


def test_two_teachers_with_weights(client, teacher_file, dataset_file):
    second = upload_ok(client, pt2_teacher(), "teacher", "second.pt2")
    request = job_request(teacher_file["id"], dataset_file["id"])
    request["teachers"] = [{**request.pop("teacher"), "weight": 2.0}, {"file_id": second["id"]}]
    response = create(client, {**request, "distillation": {"ensemble": "random"}})
    assert response.status_code == 201, response.text
    job = response.json()["request"]
    assert job["teacher"] is None
    assert [(t["format"], t["weight"]) for t in job["teachers"]] == [("safetensors", 2.0), ("pt2", 1.0)]


@pytest.mark.parametrize("both", [True, False])
def test_exactly_one_of_teacher_and_teachers(client, teacher_file, dataset_file, both):
    request = job_request(teacher_file["id"], dataset_file["id"])
    if both:
        request["teachers"] = [request["teacher"]]
    else:
        del request["teacher"]
    assert_error(create(client, request), 422, "teacher", "invalid_request")


def test_an_unknown_second_teacher_is_named(client, teacher_file, dataset_file):
    request = job_request(teacher_file["id"], dataset_file["id"])
    request["teachers"] = [request.pop("teacher"), {"file_id": "file-nope"}]
    assert_error(create(client, request), 404, "teachers.1.file_id", "not_found")


def test_a_feature_pair_must_read_an_existing_teacher(client, teacher_file, dataset_file):
    features = [{"teacher": "hidden.0", "student": "hidden.0", "teacher_index": 1}]
    request = job_request(teacher_file["id"], dataset_file["id"], distillation={"features": features})
    assert_error(create(client, request), 422, "distillation.features.0.teacher_index", "unknown_teacher")


def test_derived_student_is_filled_in(client, teacher_file, dataset_file):
    teacher = {"file_id": teacher_file["id"], "architecture": mlp_spec(hidden_sizes=[16, 16, 16, 16])}
    student = {"derive": {"depth": 0.5, "width": 0.5}}
    response = create(
        client, job_request(teacher_file["id"], dataset_file["id"], teacher=teacher, student=student)
    )
    assert response.status_code == 201, response.text
    filled = response.json()["request"]["student"]
    assert filled["architecture"]["hidden_sizes"] == [8, 8]
    assert filled["derive"] == {"depth": 0.5, "width": 0.5, "init": "teacher"}


def test_derive_and_architecture_together_are_refused(client, teacher_file, dataset_file):
    student = {"architecture": mlp_spec(), "derive": {"depth": 0.5}}
    request = job_request(teacher_file["id"], dataset_file["id"], student=student)
    assert_error(create(client, request), 422, "student.architecture", "invalid_request")


def test_derive_needs_a_teacher_architecture(client, dataset_file):
    teacher = upload_ok(client, pt2_teacher(), "teacher", "t.pt2")
    request = job_request(teacher["id"], dataset_file["id"], student={"derive": {}})
    request["teacher"] = {"file_id": teacher["id"]}
    assert_error(create(client, request), 422, "student.derive", "architecture_required")


@pytest.mark.parametrize("value", ["auto", 2.5])
def test_temperature_is_a_number_or_auto(client, teacher_file, dataset_file, value):
    request = job_request(
        teacher_file["id"], dataset_file["id"], distillation={"temperature": value, "alpha": "auto"}
    )
    response = create(client, request)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["distillation"]["temperature"] == value


@pytest.mark.parametrize(
    ("distillation", "param"),
    [
        ({"temperature": "hot"}, "distillation.temperature"),
        ({"alpha": -1}, "distillation.alpha"),
        ({"method": "distil"}, "distillation.method"),
        ({"soft_loss": "js"}, "distillation.soft_loss"),
        ({"generations": 0}, "distillation.generations"),
        ({"search": {"temperatures": []}}, "distillation.search.temperatures"),
        ({"search": {"budget_epochs": 0}}, "distillation.search.budget_epochs"),
        ({"search": {"reduction_factor": 1}}, "distillation.search.reduction_factor"),
        ({"search": {"learning_rates": [0.0]}}, "distillation.search.learning_rates.0"),
        ({"features": [{"teacher": "", "student": "hidden.0"}]}, "distillation.features.0.teacher"),
        ({"soft_loss": "dkd", "dkd": {"target_weight": -1}}, "distillation.dkd.target_weight"),
        ({"dkd": {"target_weight": 0, "non_target_weight": 0}}, "distillation.dkd"),
        ({"dkd": {"alpha": 1}}, "distillation.dkd.alpha"),
        ({"soft_loss": "dist", "dist": {"intra_weight": -0.5}}, "distillation.dist.intra_weight"),
        ({"logit_standardization": "sometimes"}, "distillation.logit_standardization"),
    ],
)
def test_bad_method_settings_name_the_field(client, teacher_file, dataset_file, distillation, param):
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation)
    assert_error(create(client, request), 422, param, "invalid_request")


@pytest.mark.parametrize("soft_loss", ["mse", "dist"])
def test_logit_standardization_needs_a_soft_loss_over_softened_logits(
    client, teacher_file, dataset_file, soft_loss
):
    distillation = {"soft_loss": soft_loss, "logit_standardization": True}
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation)
    error = assert_error(create(client, request), 422, "distillation.logit_standardization")
    assert f"not `{soft_loss}`" in error["message"]
    assert "set logit_standardization to false" in error["message"]


def test_dkd_and_dist_weights_are_filled_in_with_the_papers_defaults(client, teacher_file, dataset_file):
    distillation = {"soft_loss": "dkd", "dkd": {"target_weight": 2.0}, "logit_standardization": True}
    response = create(client, job_request(teacher_file["id"], dataset_file["id"], distillation=distillation))
    assert response.status_code == 201, response.text
    stored = response.json()["request"]["distillation"]
    assert stored["dkd"] == {"target_weight": 2.0, "non_target_weight": 8.0}
    assert stored["dist"] == {"inter_weight": 1.0, "intra_weight": 1.0} and stored["logit_standardization"]


def test_born_again_with_feature_pairs_is_refused(client, teacher_file, dataset_file):
    distillation = {"method": "born_again", "features": [{"teacher": "hidden.0", "student": "hidden.0"}]}
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation)
    assert_error(create(client, request), 422, "distillation.features", "unsupported_combination")


def test_peers_must_have_the_students_classes(client, teacher_file, dataset_file):
    distillation = {"method": "mutual", "peers": [mlp_spec(num_classes=7)]}
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation)
    assert_error(create(client, request), 422, "distillation.peers.0.num_classes", "incompatible_shapes")


@pytest.mark.parametrize(
    ("peer", "derive", "code"),
    [
        ({"family": "transformer", "vocab_size": 30, "max_length": 8, "num_classes": 3}, False,
         "incompatible_architectures"),
        ({"family": "cnn", "input_shape": [1, 2, 2], "num_classes": 3}, True, "init_family_mismatch"),
        (mlp_spec(hidden_sizes=[4, 4, 4]), True, "init_student_deeper"),
    ],
    ids=["text beside features", "another family to initialise", "deeper than the teacher"],
)  # fmt: skip
def test_peers_are_checked_like_students(client, teacher_file, dataset_file, peer, derive, code):
    """Each was accepted, then failed `internal_error` (a raw torch message, an IndexError)."""
    distillation = {"method": "mutual", "peers": [peer]}
    student = {"derive": {"depth": 1.0}} if derive else {"architecture": mlp_spec(hidden_sizes=[4])}
    request = job_request(teacher_file["id"], dataset_file["id"], distillation=distillation, student=student)
    assert_error(create(client, request), 422, "distillation.peers.0", code)


def test_export_and_augmentation_settings(client, teacher_file, dataset_file):
    ok = job_request(teacher_file["id"], dataset_file["id"], export=["int8"])
    assert create(client, ok).json()["request"]["export"] == ["int8"]
    bad_export = job_request(teacher_file["id"], dataset_file["id"], export=["fp4"])
    assert_error(create(client, bad_export), 422, "export.0", "invalid_request")
    bad_shift = job_request(teacher_file["id"], dataset_file["id"], training={"augmentation": {"shift": 99}})
    assert_error(create(client, bad_shift), 422, "training.augmentation.shift", "invalid_request")
