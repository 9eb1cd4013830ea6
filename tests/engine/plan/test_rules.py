"""The rules of a job alone, each with the code, request field and words the API answers with."""

import pytest

from engine.plan.errors import JobFailed
from engine.plan.rules import check_job, initialising_teacher_architecture
from engine.plan.specs import EngineJob

MLP = {"family": "mlp", "input_shape": [8], "num_classes": 4, "hidden_sizes": [16]}
TRANSFORMER = {"family": "transformer", "vocab_size": 16, "max_length": 12, "num_classes": 4,
               "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}  # fmt: skip
TEXT_STUDENT = TRANSFORMER | {"num_layers": 1}
PT2 = {"format": "pt2"}


def teacher(architecture=MLP) -> dict:
    return {"format": "safetensors", "architecture": architecture}


def job(teachers=None, student=MLP, **fields) -> EngineJob:
    return EngineJob.model_validate(
        {"teachers": teachers or [teacher()], "student_architecture": student} | fields
    )


def tinybert_job(teachers=None, layer_map=None, method="standard") -> EngineJob:
    transformer = {} if layer_map is None else {"layer_map": layer_map}
    distillation = {"transformer": transformer, "method": method}
    return job(teachers or [teacher(TRANSFORMER)], TEXT_STUDENT, distillation=distillation)


def broken_rule(job: EngineJob, teacher_fields=None) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        check_job(job, teacher_fields)
    return caught.value


@pytest.mark.parametrize(
    "valid",
    [
        job(),
        job(
            [teacher(), PT2],
            distillation={"features": [{"teacher": "a", "student": "b", "teacher_index": 1}]},
        ),
        job(student_init="teacher", distillation={"method": "mutual", "peers": [MLP]}),
        tinybert_job(layer_map=[1]),
    ],
    ids=["plain", "feature pair on a second, pt2 teacher", "initialised mutual", "TinyBERT"],
)
def test_a_job_that_keeps_every_rule_passes(valid):
    check_job(valid)


@pytest.mark.parametrize(
    ("teachers", "phrase"),
    [([teacher()], "has 1 teacher: "), ([teacher(), teacher()], "has 2 teachers: ")],
)
def test_a_feature_pair_reads_a_teacher_of_the_job(teachers, phrase):
    features = [
        {"teacher": "hidden.0", "student": "hidden.0"},
        {"teacher": "a", "student": "b", "teacher_index": 2},
    ]
    error = broken_rule(job(teachers, distillation={"features": features}))
    assert (error.code, error.param) == ("unknown_teacher", "distillation.features.1.teacher_index")
    assert "Feature pair 1 reads teacher 2" in error.message and phrase in error.message


def test_a_teacher_has_the_students_classes():
    error = broken_rule(job([teacher(MLP | {"num_classes": 3})]))
    assert (error.code, error.param) == ("incompatible_shapes", "student.architecture.num_classes")
    assert "teacher outputs 3 classes" in error.message and "num_classes is 4" in error.message


def test_a_pt2_teacher_declares_no_classes_to_compare():
    check_job(job([PT2], student=MLP | {"num_classes": 3}))


def test_a_peer_has_the_students_classes():
    peers = [MLP, MLP | {"num_classes": 7}]
    error = broken_rule(job(distillation={"method": "mutual", "peers": peers}))
    assert (error.code, error.param) == ("incompatible_shapes", "distillation.peers.1.num_classes")
    assert "7 classes" in error.message and "the student 4" in error.message


def test_born_again_generations_read_no_teacher_layers():
    features = [{"teacher": "hidden.0", "student": "hidden.0"}]
    error = broken_rule(job(distillation={"method": "born_again", "features": features}))
    assert (error.code, error.param) == ("unsupported_combination", "distillation.features")
    assert "born_again" in error.message


@pytest.mark.parametrize(
    ("student", "teacher_architecture"),
    [(TEXT_STUDENT, MLP), (MLP, TRANSFORMER)],
    ids=["transformer student", "mlp student"],
)
def test_a_teacher_is_a_transformer_exactly_when_the_student_is(student, teacher_architecture):
    error = broken_rule(job([teacher(teacher_architecture)], student))
    assert (error.code, error.param) == ("incompatible_architectures", "teacher.architecture")
    assert "mlp" in error.message and "transformer" in error.message


def test_the_teacher_reads_sequences_as_long_as_the_student():
    error = broken_rule(job([teacher(TRANSFORMER)], TEXT_STUDENT | {"max_length": 32}))
    assert (error.code, error.param) == ("incompatible_shapes", "student.architecture.max_length")
    assert "32" in error.message and "12" in error.message


def test_teacher_fields_name_the_teacher_at_fault():
    teachers = [teacher(), teacher(TRANSFORMER)]
    assert broken_rule(job(teachers)).param == "teachers.1.architecture"
    error = broken_rule(job(teachers), ["teachers.0", "teachers.1"])
    assert error.param == "teachers.1.architecture" and error.message.startswith(
        "teachers.1 is a transformer"
    )
    assert broken_rule(job(teachers), ["first", "second"]).param == "second.architecture"


def test_tinybert_needs_a_transformer_student():
    error = broken_rule(job(distillation={"transformer": {}}))
    assert (error.code, error.param) == ("transformer_required", "distillation.transformer")
    assert "mlp model" in error.message


def test_tinybert_needs_a_first_teacher_of_declared_architecture():
    error = broken_rule(tinybert_job([PT2, teacher(TRANSFORMER)]))
    assert (error.code, error.param) == ("transformer_required", "distillation.transformer")
    assert "teachers.0" in error.message and "pt2" in error.message


@pytest.mark.parametrize(
    ("layer_map", "words"),
    [
        ([0, 1], ["layer_map has 2 entries", "1 layers", "0 to 1"]),
        ([2], ["entries [2] are not teacher layer indices", "2 layers", "[0, 1]"]),
    ],
    ids=["wrong length", "beyond the teacher"],
)
def test_tinybert_needs_a_layer_map_that_fits(layer_map, words):
    error = broken_rule(tinybert_job(layer_map=layer_map))
    assert (error.code, error.param) == ("invalid_layer_map", "distillation.transformer.layer_map")
    assert all(word in error.message for word in words), error.message


def test_tinybert_reads_teacher_layers_born_again_generations_lack():
    error = broken_rule(tinybert_job(method="born_again"))
    assert (error.code, error.param) == ("unsupported_combination", "distillation.transformer")
    assert "born_again" in error.message


def test_a_student_initialised_from_the_teacher_needs_its_architecture():
    error = broken_rule(job([PT2], student_init="teacher"))
    assert (error.code, error.param) == ("architecture_required", "student.derive")
    assert "teacher's architecture" in error.message and "pt2" in error.message


def test_the_initialising_teacher_is_the_first_and_named_by_its_field():
    teachers = job([teacher(), PT2]).teachers
    assert initialising_teacher_architecture(teachers).model_dump() == teachers[0].architecture.model_dump()
    with pytest.raises(JobFailed) as caught:
        initialising_teacher_architecture(teachers[::-1], ["teachers.0", "teachers.1"])
    assert caught.value.param == "student.derive" and "teachers.0's architecture" in caught.value.message


def test_an_error_names_no_field_unless_given_one():
    assert JobFailed("code", "message").param is None


@pytest.mark.parametrize(
    ("student", "peer", "code", "param"),
    [
        (MLP, TEXT_STUDENT, "incompatible_architectures", "distillation.peers.0"),
        (TEXT_STUDENT, MLP, "incompatible_architectures", "distillation.peers.0"),
        (
            TEXT_STUDENT,
            TEXT_STUDENT | {"max_length": 6},
            "incompatible_shapes",
            "distillation.peers.0.max_length",
        ),
    ],
    ids=["text peer", "feature peer", "shorter peer"],
)
def test_a_peer_reads_the_students_data(student, peer, code, param):
    teachers = [teacher(TRANSFORMER if student is TEXT_STUDENT else MLP)]
    error = broken_rule(job(teachers, student, distillation={"method": "mutual", "peers": [peer]}))
    assert (error.code, error.param) == (code, param)


@pytest.mark.parametrize(
    ("peer", "code"),
    [
        ({"family": "cnn", "input_shape": [1, 2, 4], "num_classes": 4}, "init_family_mismatch"),
        (MLP | {"hidden_sizes": [8, 8]}, "init_student_deeper"),
    ],
)
def test_a_peer_initialised_from_the_teacher_can_be(peer, code):
    initialised = job(student_init="teacher", distillation={"method": "mutual", "peers": [peer]})
    error = broken_rule(initialised)
    assert (error.code, error.param) == (code, "distillation.peers.0")
    assert "distillation.peers.0" in error.message


def hf(model_type: str = "bert", **config) -> dict:
    """A transformers model's spec: text of 12 tokens, or images of [3, 8, 8]."""
    inputs = {"input_shape": [3, 8, 8]} if model_type in ("vit", "resnet") else {"max_length": 12}
    return {"family": "hf", "config": {"model_type": model_type} | config, "num_classes": 4} | inputs


def hf_tinybert_job(student=None, teacher_spec=None, layer_map=None) -> EngineJob:
    transformer = {} if layer_map is None else {"layer_map": layer_map}
    return job(
        [{"format": "hf", "architecture": teacher_spec or hf(num_hidden_layers=2)}],
        student or hf(num_hidden_layers=1),
        distillation={"transformer": transformer},
    )


@pytest.mark.parametrize(
    "valid",
    [
        hf_tinybert_job(layer_map=[0]),
        hf_tinybert_job(hf("distilbert", n_layers=1), hf("roberta", num_hidden_layers=3), layer_map=[2]),
        hf_tinybert_job(teacher_spec=hf("mpnet"), layer_map=[11]),  # 12 layers by default: the engine checks
    ],
    ids=["bert to bert", "roberta to distilbert", "layers left to transformers' default"],
)
def test_tinybert_between_transformers_text_encoders_passes(valid):
    check_job(valid)


@pytest.mark.parametrize(
    ("tinybert", "words"),
    [
        (hf_tinybert_job(hf("vit"), hf("vit")), ["the student is an hf image model (vit)"]),
        (
            hf_tinybert_job(teacher_spec=hf("albert")),
            ["teacher, which is an hf text model (albert)", "(bert, camembert, "],
        ),
        (hf_tinybert_job(TEXT_STUDENT), ["the student is a transformer model and teacher a hf text model"]),
        (
            job([teacher(TRANSFORMER)], hf(), distillation={"transformer": {}}),
            ["the student is a hf text model and teacher a transformer model"],
        ),
    ],
    ids=["image models", "a text model without its layers one by one", "hf teacher", "transformer teacher"],
)
def test_tinybert_needs_two_text_encoders_of_one_kind(tinybert, words):
    error = broken_rule(tinybert)
    assert (error.code, error.param) == ("transformer_required", "distillation.transformer")
    assert all(word in error.message for word in words), error.message


def test_tinybert_checks_the_layer_map_against_an_hf_config():
    error = broken_rule(hf_tinybert_job(layer_map=[2]))
    assert (error.code, error.param) == ("invalid_layer_map", "distillation.transformer.layer_map")
    assert "the teacher has 2 layers" in error.message
