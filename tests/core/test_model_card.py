"""A job's model card, from its request, metrics, files and artifacts."""

import json

from core.model_card import CardFile, model_card

REQUEST = {
    "teacher": {"file_id": "file-t"}, "teachers": None,
    "student": {"architecture": {"family": "mlp", "input_shape": [16], "num_classes": 4}},
    "distillation": {"method": "standard", "temperature": 4.0, "alpha": 0.9, "beta": 0.1, "soft_loss": "kl"},
}  # fmt: skip
METRICS = {
    "teacher": {"accuracy": 0.96, "parameters": 18_948, "latency_ms": {"batch_1": 0.2, "batch_64": 0.01}},
    "student": {"accuracy": 0.94, "parameters": 340, "latency_ms": {"batch_1": 0.05, "batch_64": 0.002}},
    "agreement": 0.97, "accuracy_retention": 0.979, "compression": 55.7,
    "speedup": {"batch_1": 4.0, "batch_64": 5.0}, "latency_device": "cpu",
    "gates": [{"metric": "compression", "op": ">=", "threshold": 100.0, "value": 55.7, "passed": False}],
}  # fmt: skip
FILES = [CardFile("teacher", "teacher.safetensors", "a" * 64), CardFile("train", "train.npz", "b" * 64)]


def test_the_card_says_what_was_distilled_on_what_and_how_well():
    card = model_card("job-1", REQUEST, METRICS, FILES, ["student.pt2", "student.onnx"])
    assert card.startswith(
        '---\nlibrary_name: "distill"\ntags: ["knowledge-distillation", "mlp"]\njob: "job-1"'
    )
    assert "distilled from a teacher of 18,948 parameters with the `standard` method: temperature 4.0" in card
    assert f"- train: `train.npz` (sha256 `{'b' * 64}`)" in card
    assert "| accuracy | 96.00% | 94.00% |" in card and "| ms per sample, batch 1 | 0.2 | 0.05 |" in card
    assert "speed-up: 4.00x at batch 1, 5.00x at batch 64 on cpu" in card
    assert "- compression 55.7 >= 100 failed" in card
    assert (
        'torch.export.load("student.pt2")' in card and 'onnxruntime.InferenceSession("student.onnx")' in card
    )


def test_the_card_gives_dkds_weights_and_the_logit_standardization():
    distillation = REQUEST["distillation"] | {
        "soft_loss": "dkd",
        "dkd": {"target_weight": 1.0, "non_target_weight": 8.0},
        "dist": {"inter_weight": 1.0, "intra_weight": 1.0},
        "logit_standardization": True,
    }
    card = model_card("job-1", REQUEST | {"distillation": distillation}, METRICS, FILES, ["student.pt2"])
    assert "soft loss `dkd` (target_weight 1.0, non_target_weight 8.0) on standardised logits." in card
    assert "inter_weight" not in card
    assert "soft loss `kl`." in model_card("job-1", REQUEST, METRICS, FILES, ["student.pt2"])


def test_without_onnx_or_gates_the_card_leaves_them_out():
    metrics = {key: value for key, value in METRICS.items() if key != "gates"}
    card = model_card("job-1", REQUEST, metrics, FILES, ["student.pt2"])
    assert "## Gates" not in card and "onnxruntime" not in card


def test_a_transformers_students_card_carries_the_hubs_metadata_and_runs_in_a_pipeline():
    student = {"family": "hf", "config": {"model_type": "bert"}, "num_classes": 4, "max_length": 32}
    teacher_config = {"model_type": "bert", "_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"}
    request = REQUEST | {
        "teacher": {"file_id": "file-t", "architecture": {"family": "hf", "config": teacher_config}},
        "student": {"architecture": student},
    }
    files = [*FILES, CardFile("validation", "test.jsonl", "c" * 64)]
    card = model_card("job-1", request, METRICS, files, ["student.pt2", "student.hf.zip"])
    metadata = card.split("---")[1]
    assert 'library_name: "transformers"' in metadata and 'pipeline_tag: "text-classification"' in metadata
    assert 'datasets: ["train.npz", "test.jsonl"]' in metadata
    assert 'base_model: "sentence-transformers/all-MiniLM-L6-v2"' in metadata
    assert '"name": "student accuracy", "value": 0.94' in metadata
    assert '"name": "teacher accuracy", "value": 0.96' in metadata
    assert 'pipeline("text-classification", model="student.hf")' in card
    assert card.index("## How to run it") < card.index("pipeline(") < card.index("torch.export.load")
    local = request["teacher"]["architecture"]["config"] | {"_name_or_path": "/home/me/teacher"}
    request["teacher"]["architecture"]["config"] = local
    assert "base_model" not in model_card("job-1", request, METRICS, files, ["student.hf.zip"])


LM_REQUEST = REQUEST | {
    "teacher": {"file_id": "file-t", "architecture": {"family": "hf", "config": {"model_type": "llama"}}},
    "student": {"architecture": {"family": "hf", "config": {"model_type": "llama"}, "max_length": 64}},
    "distillation": REQUEST["distillation"] | {"divergence": "jsd", "jsd_beta": 0.5},
}
LM_METRICS = {
    "task": "causal-lm",
    "teacher": {"perplexity": 12.3, "accuracy": 0.41, "parameters": 4_000_000,
                "latency_ms": {"batch_1": 2.0, "batch_64": 0.1}},
    "student": {"perplexity": 15.0, "accuracy": 0.37, "parameters": 1_000_000,
                "latency_ms": {"batch_1": 0.5, "batch_64": 0.03}},
    "agreement": 0.62, "kl_to_teacher": 0.31, "accuracy_retention": 0.9, "compression": 4.0,
    "speedup": {"batch_1": 4.0, "batch_64": 3.3}, "latency_device": "cpu", "tokens": 12_345,
    "samples": [{"prompt": "To be, or", "teacher": " not to be", "student": " not to\nbe"},
                {"prompt": "say ```", "teacher": "```python", "student": "ok"}],
}  # fmt: skip


def test_a_causal_language_models_card_gives_perplexities_kl_and_generations():
    card = model_card("job-1", LM_REQUEST, LM_METRICS, FILES, ["student.hf.zip"])
    metadata = card.split("---")[1]
    assert 'pipeline_tag: "text-generation"' in metadata
    assert "student_perplexity: 15.0\nteacher_perplexity: 12.3\nstudent_accuracy: 0.37" in metadata
    hub = json.loads(metadata.split("model-index: ")[1].splitlines()[0])[0]["results"][0]
    assert hub["task"] == {"type": "text-generation"}
    assert hub["metrics"] == [
        {"type": "perplexity", "name": "student perplexity", "value": 15.0},
        {"type": "perplexity", "name": "teacher perplexity", "value": 12.3},
    ]
    assert "method: temperature 4.0, alpha 0.9, beta 0.1, token divergence `jsd` (jsd_beta 0.5)." in card
    assert "| perplexity | 12.3 | 15 |" in card and "| next-token accuracy | 41.00% | 37.00% |" in card
    assert "- top-1 next-token agreement with the teacher: 62.00%" in card
    assert "- KL(teacher || student): 0.31 nats per token, on 12,345 validation tokens" in card
    assert "```text\nprompt:  To be, or\nteacher:  not to be\nstudent:  not to\n         be\n```" in card
    assert "````text\nprompt:  say ```\nteacher: ```python\nstudent: ok\n````" in card  # fenced off
    assert 'generate = pipeline("text-generation", model="student.hf")' in card
    assert 'AutoModelForCausalLM.from_pretrained("student.hf")' in card
    assert "torch.export" not in card and "soft loss" not in card


def test_a_lora_students_card_says_what_its_adapter_applies_to():
    lora = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
            "trainable_parameters": 4_096, "parameters": 1_004_096}  # fmt: skip
    artifacts = ["student.hf.zip", "student.lora.zip"]
    copy = model_card(
        "job-1", LM_REQUEST, LM_METRICS | {"lora": lora | {"base": "teacher"}}, FILES, artifacts
    )
    assert "## The LoRA adapter\n\n`student.lora.zip` holds the adapter alone" in copy
    assert "rank 8, alpha 16 on `q_proj`, `v_proj`, 4,096 trained parameters" in copy
    assert "It applies to the teacher itself" in copy
    assert 'student = PeftModel.from_pretrained(teacher, "student.lora")' in copy
    derived = model_card(
        "job-1", LM_REQUEST, LM_METRICS | {"lora": lora | {"base": "derived"}}, FILES, artifacts
    )
    assert "It applies to the derived student's initial weights" in derived and "PeftModel" not in derived
    assert "LoRA" not in model_card("job-1", LM_REQUEST, LM_METRICS, FILES, ["student.hf.zip"])
