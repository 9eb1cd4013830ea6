"""A Hugging Face model in, a Hugging Face model out, as a user runs it: `distill run` with a job file that
names a fine-tuned BERT classifier's `save_pretrained` folder and text with label names as JSON Lines; a
student derived from the teacher through the real API and worker; the student folder `distill run -o`
unpacks loads in a Python that holds torch and transformers but none of the service's packages, and
`pipeline` scores on the validation texts what the job reported."""

import json

import pytest

from tests.e2e.outside import distill_run, in_a_bare_python
from tests.hf_text_factories import dog_texts, fine_tuned_bert_folder, write_jsonl

pytestmark = pytest.mark.e2e

SCORE = """
import json
from transformers import pipeline
folder, texts, labels = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
classify = pipeline("text-classification", model=folder)
predicted = [result["label"] for result in classify(texts)]
print(json.dumps(sum(p == y for p, y in zip(predicted, labels)) / len(labels)))
"""


def test_a_fine_tuned_bert_folder_in_a_from_pretrained_student_out(stack, tmp_path):
    texts, labels = dog_texts(256, seed=0)
    val_texts, val_labels = dog_texts(96, seed=1)
    fine_tuned_bert_folder(tmp_path / "my-model", texts, labels)
    write_jsonl(tmp_path / "train.jsonl", texts, labels)
    write_jsonl(tmp_path / "val.jsonl", val_texts, val_labels)
    job = distill_run(
        stack,
        tmp_path,
        "teacher: {file: my-model}\n"  # the folder save_pretrained wrote: the CLI archives it
        "student: {derive: {depth: 0.5}}\n"
        "dataset: {train_file: train.jsonl, validation_file: val.jsonl, max_length: 16}\n"
        "distillation: {temperature: 2.0, alpha: 0.5, beta: 0.5}\n"
        "training: {epochs: 3, batch_size: 32, learning_rate: 0.001}\n"
        "export: []\n",
    )
    teacher = stack.client.get(f"/v1/files/{job['request']['teacher']['file_id']}").json()
    model = teacher["model"]
    assert (teacher["format"], model["model_type"], model["task"]) == ("hf", "bert", "text")
    student = job["request"]["student"]["architecture"]
    assert (student["family"], student["config"]["num_hidden_layers"], student["max_length"]) == ("hf", 1, 16)
    metrics = job["metrics"]
    assert metrics["teacher"]["accuracy"] == 1.0
    assert metrics["student"]["parameters"] == student["parameters"] < model["parameters"]

    folder = tmp_path / "out" / "student.hf"
    card = (folder / "README.md").read_text()
    assert 'pipeline_tag: "text-classification"' in card and job["id"] in card
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "plain", "1": "dog"}
    scored = in_a_bare_python(SCORE, str(folder), json.dumps(val_texts), json.dumps(val_labels), cwd=tmp_path)
    assert json.loads(scored) == pytest.approx(metrics["student"]["accuracy"], abs=1 / len(val_labels))
