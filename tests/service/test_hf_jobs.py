"""Jobs with an `hf` teacher, as the API resolves them at submission: the teacher's spec from its folder, a
student derived from it or given as a transformers config, both counted for the job's bounds, and each
pairing or data mistake a 422 that names the field. Causal language models too: their records, their
tokenizer and chat template, their length and gates."""

import json

import numpy as np
import pytest

from core import hf_sizes, request_rules
from tests.hf_archives import TOKENIZER_FILES, tiny_bert, tiny_lm, tiny_vit, zip_archive
from tests.lm_factories import CHATS, PROMPTS
from tests.lm_factories import TEXTS as LM_TEXTS

from .helpers import npz_bytes, parquet_bytes

TEXTS = "".join(json.dumps({"text": f"a b {i}", "label": "LABEL_1"}) + "\n" for i in range(8))
INVALID = "invalid_model_config"
SMALL_BERT = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8}


def upload(client, content: bytes, purpose: str, name: str) -> dict:
    response = client.post("/v1/files", files={"file": (name, content)}, data={"purpose": purpose})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def bert_teacher(client) -> dict:
    files, _parameters = tiny_bert()
    return upload(client, zip_archive(files | TOKENIZER_FILES), "teacher", "bert.zip")


@pytest.fixture(scope="module")
def texts(client) -> dict:
    return upload(client, TEXTS.encode(), "dataset", "texts.jsonl")


def submit(
    client, teacher: dict, dataset: dict, student: dict, distillation=None, gates=(), **dataset_fields
):
    body = {
        "teacher": {"file_id": teacher["id"]},
        "student": student,
        "dataset": {"train_file_id": dataset["id"], **dataset_fields},
        "distillation": distillation or {},
        "training": {"epochs": 1},
        "export": [],
        "gates": list(gates),
    }
    return client.post("/v1/jobs", json=body)


def refused(response, code: str, param: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    return error["message"]


def test_a_derived_student_is_counted_and_reads_the_teachers_labels(client, bert_teacher, texts):
    response = submit(client, bert_teacher, texts, {"derive": {"width": 0.5}}, max_length=8)
    assert response.status_code == 201, response.text
    request = response.json()["request"]
    teacher, student = request["teacher"]["architecture"], request["student"]["architecture"]
    assert teacher["parameters"] == bert_teacher["model"]["parameters"] == tiny_bert()[1]
    assert (student["family"], student["num_classes"], student["max_length"]) == ("hf", 3, 8)
    assert student["config"]["hidden_size"] == 4
    assert 0 < student["parameters"] < teacher["parameters"]
    assert student["activation_floats"] > 0
    # Unset, the training is transformers' fine-tuning, at the rate of a start from narrowed teacher layers.
    training = request["training"]
    assert (training["optimizer"], training["learning_rate"]) == ("adamw", 2e-4)
    assert training["lr_schedule"] == "linear"
    assert (training["weight_decay"], training["warmup_epochs"]) == (0.01, 0.06)


@pytest.mark.parametrize(
    ("student", "learning_rate"),
    [
        ({"derive": {"depth": 0.5}}, 5e-5),  # whole layers of the teacher
        ({"derive": {"depth": 0.5, "width": 0.5}}, 2e-4),  # narrowed ones
        ({"derive": {"init": "random"}}, 2e-4),
        ({"hf": SMALL_BERT}, 2e-4),
    ],
)
def test_a_transformers_students_default_learning_rate_suits_its_start(
    client, bert_teacher, texts, student, learning_rate
):
    response = submit(client, bert_teacher, texts, student, max_length=8)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["training"]["learning_rate"] == learning_rate


def test_an_image_student_from_random_weights_learns_at_1e_3(client):
    files, _ = tiny_vit()
    vit = upload(client, zip_archive(files), "teacher", "vit.zip")
    images = upload(client, npz_bytes(x=np.zeros((8, 3, 8, 8), np.float32)), "dataset", "images.npz")
    response = submit(client, vit, images, {"derive": {"init": "random"}})
    assert response.status_code == 201, response.text
    assert response.json()["request"]["training"]["learning_rate"] == 1e-3


def test_counting_a_transformers_model_holds_no_database_connection(
    client, resources, bert_teacher, texts, monkeypatch
):
    """Counting a new model takes seconds in a child process: meanwhile the API's other requests need
    every connection of the pool."""
    held = []

    def counted(specs):
        held.append(resources.database.engine.pool.checkedout())
        return hf_sizes.measured(specs)

    monkeypatch.setattr(request_rules, "measured", counted)
    response = submit(client, bert_teacher, texts, {"derive": {"width": 0.5}}, max_length=8)
    assert response.status_code == 201, response.text
    assert held == [0]


def test_a_student_given_as_a_config_takes_the_teachers_labels_and_length(client, bert_teacher, texts):
    response = submit(client, bert_teacher, texts, {"hf": SMALL_BERT | {"num_hidden_layers": 1}})
    assert response.status_code == 201, response.text
    student = response.json()["request"]["student"]["architecture"]
    assert student["config"]["id2label"] == bert_teacher["model"]["labels"] or student["num_classes"] == 3
    assert student["max_length"] == 16  # the teacher's positions, under the default of 128
    assert response.json()["request"]["training"]["learning_rate"] == 2e-4  # from random weights


@pytest.mark.parametrize(
    ("student", "code", "param"),
    [
        ({"hf": {"model_type": "gpt2"}}, INVALID, "student.hf"),
        ({"hf": {"model_type": "vit"}}, INVALID, "student.hf"),
        ({"hf": SMALL_BERT | {"auto_map": {"AutoModel": "evil.Model"}}}, INVALID, "student.hf"),
        ({"hf": SMALL_BERT | {"num_hidden_layers": 900_000}}, INVALID, "student.hf"),
        ({"hf": SMALL_BERT | {"hidden_size": 9}}, INVALID, "student.hf"),
        ({"hf": SMALL_BERT, "derive": {}}, "invalid_request", "student.architecture"),
    ],
    ids=["not a classifier", "another task", "remote code", "absurd depth", "heads do not divide", "both"],
)
def test_a_student_that_cannot_be_built_is_refused(client, bert_teacher, texts, student, code, param):
    refused(submit(client, bert_teacher, texts, student), code, param)


@pytest.mark.parametrize(
    "architecture",
    [
        {"family": "transformer", "vocab_size": 30, "max_length": 8, "num_classes": 3},
        {"family": "mlp", "input_shape": [8], "num_classes": 3},
    ],
    ids=["transformer", "mlp"],
)
def test_an_hf_teachers_student_is_a_transformers_model(client, bert_teacher, texts, architecture):
    message = refused(
        submit(client, bert_teacher, texts, {"architecture": architecture}),
        "incompatible_student",
        "student.architecture",
    )
    assert "student.derive or student.hf" in message


def test_an_hf_teacher_carries_its_own_architecture(client, bert_teacher, texts):
    body = {
        "teacher": {
            "file_id": bert_teacher["id"],
            "architecture": {"family": "hf", "config": SMALL_BERT, "num_classes": 3, "max_length": 8},
        },
        "student": {"derive": {}},
        "dataset": {"train_file_id": texts["id"]},
    }
    refused(client.post("/v1/jobs", json=body), "unexpected_architecture", "teacher.architecture")


def test_text_is_tokenized_by_the_teacher_folders_tokenizer(client, bert_teacher, texts):
    tokenizer = upload(client, json.dumps({"model": {}}).encode(), "tokenizer", "tokenizer.json")
    response = submit(client, bert_teacher, texts, {"derive": {}}, tokenizer_file_id=tokenizer["id"])
    refused(response, "unexpected_tokenizer", "dataset.tokenizer_file_id")
    files, _ = tiny_bert()
    without_tokenizer = upload(client, zip_archive(files), "teacher", "bare.zip")
    response = submit(client, without_tokenizer, texts, {"derive": {}})
    message = refused(response, "tokenizer_required", "dataset.train_file_id")
    assert "save_pretrained" in message


def test_an_image_teacher_does_not_read_text(client, texts):
    files, _ = tiny_vit()
    teacher = upload(client, zip_archive(files), "teacher", "vit.zip")
    refused(submit(client, teacher, texts, {"derive": {}}), "incompatible_dataset", "dataset.train_file_id")


def test_tinybert_pairs_text_encoders_and_refuses_image_models(client, bert_teacher, texts):
    tinybert = {"transformer": {"layer_map": [0]}}
    response = submit(client, bert_teacher, texts, {"derive": {"depth": 0.5}}, tinybert)
    assert response.status_code == 201, response.text
    files, _ = tiny_vit()
    vit = upload(client, zip_archive(files), "teacher", "vit.zip")
    images = upload(client, npz_bytes(x=np.zeros((8, 3, 8, 8), np.float32)), "dataset", "images.npz")
    message = refused(
        submit(client, vit, images, {"derive": {}}, tinybert),
        "transformer_required",
        "distillation.transformer",
    )
    assert "the student is an hf image model (vit)" in message


def mutual_with(client, teacher: dict, dataset: dict, peer: dict):
    body = {
        "teacher": {"file_id": teacher["id"]},
        "student": {"derive": {}},
        "dataset": {"train_file_id": dataset["id"], "max_length": 8},
        "distillation": {"method": "mutual", "peers": [peer]},
        "training": {"epochs": 1},
        "export": [],
    }
    return client.post("/v1/jobs", json=body)


PEER = {"family": "hf", "config": SMALL_BERT | {"num_hidden_layers": 1}, "num_classes": 3, "max_length": 16}
IMAGE_PEER = {"family": "hf", "config": {"model_type": "vit"}, "num_classes": 3, "input_shape": [3, 8, 8]}


def test_an_hf_peer_reads_the_teachers_tokens_and_names_its_labels(client, bert_teacher, texts):
    response = mutual_with(client, bert_teacher, texts, PEER)
    assert response.status_code == 201, response.text
    request = response.json()["request"]
    teacher, peer = request["teacher"]["architecture"], request["distillation"]["peers"][0]
    # Not transformers' default vocabulary of 30,522 ids: a peer exported as the student names the labels too.
    assert peer["config"]["vocab_size"] == teacher["config"]["vocab_size"] == 30
    assert peer["config"]["id2label"] == teacher["config"]["id2label"]
    assert (peer["max_length"], peer["config"]["hidden_size"]) == (8, 8)  # the student's token ids
    assert 0 < peer["parameters"] < 30_522 * 8  # counted, and without 30,522 ids' embeddings


@pytest.mark.parametrize(
    ("peer", "code", "param"),
    [
        (PEER | {"num_classes": 2}, "incompatible_shapes", "distillation.peers.0.num_classes"),
        (IMAGE_PEER, "incompatible_student", "distillation.peers.0"),
    ],
    ids=["other labels", "images"],
)
def test_an_hf_peer_that_cannot_learn_from_the_teacher_is_refused(
    client, bert_teacher, texts, peer, code, param
):
    refused(mutual_with(client, bert_teacher, texts, peer), code, param)


# Causal language models


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def parquet(records: list[dict]) -> bytes:
    return parquet_bytes({name: [record[name] for record in records] for name in records[0]})


LM_DATASETS = {"text": LM_TEXTS, "prompt_completion": PROMPTS, "messages": CHATS}


def upload_lm(client, files: dict[str, bytes], name: str) -> dict:
    return upload(client, zip_archive(files), "teacher", name)


def llama_files(*, without: tuple[str, ...] = (), **changed: bytes) -> dict[str, bytes]:
    files, _parameters = tiny_lm(tied=False)
    return {name: content for name, content in files.items() if name not in without} | changed


@pytest.fixture(scope="module")
def llama_teacher(client, resources) -> dict:
    return upload_lm(client, llama_files(), "llama.zip")


@pytest.fixture(scope="module")
def lm_data(client) -> dict[str, dict]:
    """Each shape of a language model's records, uploaded as JSON Lines and as Parquet."""
    files = {}
    for shape, records in LM_DATASETS.items():
        files[f"{shape}.jsonl"] = upload(client, jsonl(records), "dataset", f"{shape}.jsonl")
        files[f"{shape}.parquet"] = upload(client, parquet(records), "dataset", f"{shape}.parquet")
    return files


@pytest.mark.parametrize(
    "name", [f"{shape}.{kind}" for shape in LM_DATASETS for kind in ("jsonl", "parquet")]
)
def test_a_causal_language_model_learns_from_text_prompts_and_conversations(
    client, llama_teacher, lm_data, name
):
    response = submit(client, llama_teacher, lm_data[name], {"derive": {"depth": 0.5}})
    assert response.status_code == 201, response.text
    student = response.json()["request"]["student"]["architecture"]
    assert (student["config"]["model_type"], student["config"]["num_hidden_layers"]) == ("llama", 2)
    assert student["max_length"] == 64  # the teacher's positions, under the default of 128


def test_the_teachers_completions_are_the_samples_the_bound_counts(
    client, llama_teacher, lm_data, resources, monkeypatch
):
    prompts, completions = len(PROMPTS), {"temperature": 1.0, "samples_per_prompt": 3}
    monkeypatch.setattr(resources.settings, "max_job_sample_epochs", 3 * prompts)  # one epoch of 3 a prompt
    dataset = lm_data["prompt_completion.jsonl"]
    response = submit(client, llama_teacher, dataset, {"derive": {}}, {"sequence_level": completions})
    assert response.status_code == 201, response.text
    completions["samples_per_prompt"] = 4
    response = submit(client, llama_teacher, dataset, {"derive": {}}, {"sequence_level": completions})
    message = refused(response, "too_many_epochs", "training.epochs")
    assert f"over {4 * prompts} training samples (the teacher's completions of {prompts})" in message
    assert "ask for fewer distillation.sequence_level.samples_per_prompt" in message


def test_a_causal_language_model_reads_the_blocks_asked_for(client, llama_teacher, lm_data):
    response = submit(client, llama_teacher, lm_data["text.jsonl"], {"derive": {}}, max_length=16)
    assert response.status_code == 201, response.text
    assert response.json()["request"]["student"]["architecture"]["max_length"] == 16
    too_long = submit(client, llama_teacher, lm_data["text.jsonl"], {"derive": {}}, max_length=65)
    message = refused(too_long, "incompatible_student", "student.derive")
    assert "give dataset.max_length 64 or less" in message


def test_a_causal_language_model_job_defaults_to_its_folder_alone_and_temperature_one(
    client, llama_teacher, lm_data
):
    body = {
        "teacher": {"file_id": llama_teacher["id"]},
        "student": {"derive": {}},
        "dataset": {"train_file_id": lm_data["text.jsonl"]["id"]},
    }
    resolved = client.post("/v1/jobs", json=body).json()["request"]
    assert resolved["export"] == [] and resolved["distillation"]["temperature"] == 1.0
    asked = body | {"distillation": {"temperature": 2.0, "divergence": "jsd"}, "export": ["onnx", "int8"]}
    message = refused(client.post("/v1/jobs", json=asked), "unsupported_combination", "export")
    assert "remove `int8`" in message
    asked["export"] = ["onnx"]
    resolved = client.post("/v1/jobs", json=asked).json()["request"]
    assert resolved["distillation"]["temperature"] == 2.0 and resolved["distillation"]["divergence"] == "jsd"


def test_a_causal_language_model_reads_no_arrays(client, llama_teacher):
    arrays = upload(client, npz_bytes(x=np.zeros((8, 16), np.int64)), "dataset", "ids.npz")
    message = refused(
        submit(client, llama_teacher, arrays, {"derive": {}}), "incompatible_dataset", "dataset.train_file_id"
    )
    assert "which a causal language model (llama) does not read (it reads jsonl or parquet)" in message
    assert "never from arrays: write the dataset as JSON Lines or Parquet" in message


def test_a_causal_language_model_reads_no_images(client, llama_teacher, lm_data):
    images = upload(client, parquet_bytes({"image": [b"png"]}), "dataset", "images.parquet")
    body = {
        "teacher": {"file_id": llama_teacher["id"]},
        "student": {"derive": {}},
        "dataset": {"train_file_id": lm_data["text.jsonl"]["id"], "validation_file_id": images["id"]},
    }
    message = refused(
        client.post("/v1/jobs", json=body), "incompatible_dataset", "dataset.validation_file_id"
    )
    assert "holds images" in message and "learns from text records" in message


@pytest.mark.parametrize(
    ("name", "fields"),
    [("prompt_completion.jsonl", "`prompt` and `completion`"), ("messages.parquet", "`messages`")],
)
def test_a_classifier_refuses_a_language_models_records(client, bert_teacher, lm_data, name, fields):
    message = refused(
        submit(client, bert_teacher, lm_data[name], {"derive": {}}),
        "incompatible_dataset",
        "dataset.train_file_id",
    )
    assert f"holds {fields} records, which train a causal language model" in message
    assert "the student is a text classifier (bert), which reads `text` (optionally `text_pair`)" in message


def test_a_classifier_reads_a_language_models_text(client, bert_teacher, lm_data):
    response = submit(client, bert_teacher, lm_data["text.parquet"], {"derive": {}}, max_length=8)
    assert response.status_code == 201, response.text


def test_a_causal_language_model_needs_the_teachers_tokenizer(client, lm_data):
    bare = upload_lm(
        client,
        llama_files(without=("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")),
        "bare.zip",
    )
    message = refused(
        submit(client, bare, lm_data["prompt_completion.jsonl"], {"derive": {}}),
        "tokenizer_required",
        "dataset.train_file_id",
    )
    assert "tokenizer.save_pretrained(folder)" in message


def test_conversations_need_the_teachers_chat_template(client, lm_data):
    without = upload_lm(client, llama_files(without=("chat_template.jinja",)), "plain.zip")
    message = refused(
        submit(client, without, lm_data["messages.jsonl"], {"derive": {}}),
        "chat_template_missing",
        "dataset.train_file_id",
    )
    assert "tokenizer.chat_template = " in message and "tokenizer.save_pretrained(folder)" in message
    assert submit(client, without, lm_data["prompt_completion.jsonl"], {"derive": {}}).status_code == 201
    config = json.loads(llama_files()["tokenizer_config.json"]) | {"chat_template": "{{ messages }}"}
    in_config = upload_lm(
        client,
        llama_files(
            without=("chat_template.jinja",), **{"tokenizer_config.json": json.dumps(config).encode()}
        ),
        "in-config.zip",
    )
    assert submit(client, in_config, lm_data["messages.jsonl"], {"derive": {}}).status_code == 201


def test_perplexity_and_kl_gates_are_a_causal_language_models(
    client, bert_teacher, texts, llama_teacher, lm_data
):
    gates = [{"metric": "agreement", "op": ">=", "value": 0.5}] + [
        {"metric": metric, "op": "<", "value": 9} for metric in ("student.perplexity", "kl_to_teacher")
    ]
    response = submit(client, llama_teacher, lm_data["text.jsonl"], {"derive": {}}, gates=gates)
    assert response.status_code == 201, response.text
    message = refused(
        submit(client, bert_teacher, texts, {"derive": {}}, gates=gates, max_length=8),
        "invalid_request",
        "gates.1.metric",
    )
    assert "A gate on student.perplexity needs a causal language model student" in message
    gap = [{"metric": "gap_closed", "op": ">=", "value": 0.4}]
    message = refused(
        submit(client, llama_teacher, lm_data["text.jsonl"], {"derive": {}}, gates=gap),
        "invalid_request",
        "gates.0.metric",
    )
    assert "set distillation.alone_reference to true" in message
    response = submit(
        client, llama_teacher, lm_data["text.jsonl"], {"derive": {}}, {"alone_reference": True}, gates=gap
    )
    assert response.status_code == 201, response.text


def test_a_lora_student_resolves_with_its_adapters_and_their_learning_rate(client, llama_teacher, lm_data):
    copy = {
        "derive": {"depth": 1, "width": 1},
        "lora": {"r": 4, "target_modules": ["q_proj", "mlp.down_proj"]},
    }
    response = submit(client, llama_teacher, lm_data["text.jsonl"], copy)
    assert response.status_code == 201, response.text
    request = response.json()["request"]
    # 4 layers, each q_proj (32 -> 32) and down_proj (64 -> 32) adapted by A [4, in] and B [out, 4]
    assert request["student"]["lora"].pop("parameters") == 4 * (4 * (32 + 32) + 4 * (64 + 32))
    assert request["student"]["lora"] == {
        "r": 4,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": ["q_proj", "mlp.down_proj"],
    }
    student, teacher = request["student"]["architecture"], request["teacher"]["architecture"]
    assert student["parameters"] == teacher["parameters"]  # a copy of the teacher, adapted
    assert request["training"]["learning_rate"] == 2e-4
    defaults = submit(client, llama_teacher, lm_data["text.jsonl"], {"derive": {"depth": 0.5}, "lora": {}})
    assert defaults.json()["request"]["student"]["lora"]["target_modules"] is None


@pytest.mark.parametrize(
    ("student", "param", "words"),
    [
        ({"derive": {"init": "random"}, "lora": {}}, "student.lora", "this one starts at random"),
        ({"hf": {"model_type": "llama"}, "lora": {}}, "student.lora", "this one starts at random"),
        ({"derive": {}, "lora": {"target_modules": ["lm_head"]}}, "student.lora.target_modules.0", "q_proj"),
        (
            {"derive": {}, "lora": {"target_modules": ["nowhere"]}},
            "student.lora.target_modules.0",
            "'nowhere'",
        ),
    ],
)
def test_a_lora_student_that_cannot_learn_so_is_refused(
    client, llama_teacher, lm_data, student, param, words
):
    response = submit(client, llama_teacher, lm_data["text.jsonl"], student)
    assert words in refused(response, "unsupported_combination", param)


def test_a_classifier_is_no_lora_student(client, bert_teacher, texts):
    response = submit(client, bert_teacher, texts, {"derive": {}, "lora": {}}, max_length=8)
    assert "adapts a causal language model" in refused(response, "unsupported_combination", "student.lora")
