"""A Hugging Face model in, a Hugging Face model out, over HTTP: a fine-tuned BERT classifier's
`save_pretrained` folder uploaded as a zip, text with label names as JSON Lines, a student derived from the
teacher through the real worker; the downloaded `student.hf.zip` loads in a Python that holds torch and
transformers but none of the service's packages, and `pipeline` scores on the validation texts what the job
reported."""

import json
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.hf_archives import folder_files, zip_archive
from tests.hf_text_factories import dog_texts, fine_tuned_bert_folder

pytestmark = pytest.mark.e2e

# Only the third-party packages: `-I -S` leaves out the working directory, the environment and the .pth
# files that put the project's own packages on the path.
SCORE_IN_A_BARE_PYTHON = """
import json, sys
try:
    import engine
    sys.exit("the project's packages are importable")
except ImportError:
    pass
from transformers import pipeline
folder, texts, labels = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
classify = pipeline("text-classification", model=folder)
predicted = [result["label"] for result in classify(texts)]
print(json.dumps(sum(p == y for p, y in zip(predicted, labels)) / len(labels)))
"""


def write_jsonl(path, texts, labels):
    lines = [json.dumps({"text": text, "label": label}) for text, label in zip(texts, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_fine_tuned_bert_folder_in_a_from_pretrained_student_out(stack, tmp_path):
    texts, labels = dog_texts(256, seed=0)
    val_texts, val_labels = dog_texts(96, seed=1)
    teacher_folder = fine_tuned_bert_folder(tmp_path / "my-model", texts, labels)
    archive = tmp_path / "my-model.zip"
    archive.write_bytes(zip_archive(folder_files(teacher_folder)))

    teacher = stack.client.upload(archive, "teacher")
    assert teacher["format"] == "hf"
    assert teacher["model"]["model_type"] == "bert" and teacher["model"]["task"] == "text"
    train = stack.client.upload(write_jsonl(tmp_path / "train.jsonl", texts, labels), "dataset")
    validation = stack.client.upload(write_jsonl(tmp_path / "val.jsonl", val_texts, val_labels), "dataset")

    job = stack.client.submit(
        {
            "teacher": {"file_id": teacher["id"]},
            "student": {"derive": {"depth": 0.5}},
            "dataset": {
                "train_file_id": train["id"],
                "validation_file_id": validation["id"],
                "max_length": 16,
            },
            "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5},
            "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.001},
            "export": [],
        }
    )
    student = job["request"]["student"]["architecture"]
    assert (student["family"], student["config"]["num_hidden_layers"], student["max_length"]) == ("hf", 1, 16)
    assert 0 < student["parameters"] < teacher["model"]["parameters"]
    job = stack.client.wait_for_job(job["id"], timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.logs()}"
    metrics = job["metrics"]
    assert metrics["teacher"]["accuracy"] == 1.0
    assert metrics["student"]["parameters"] == student["parameters"]

    download = stack.client.get(f"/v1/jobs/{job['id']}/artifacts/student.hf.zip")
    assert download.status_code == 200
    folder = tmp_path / "student.hf"
    (tmp_path / "student.hf.zip").write_bytes(download.content)
    with zipfile.ZipFile(tmp_path / "student.hf.zip") as unpacked:
        unpacked.extractall(folder)
    card = (folder / "README.md").read_text()
    assert 'pipeline_tag: "text-classification"' in card and job["id"] in card
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "plain", "1": "dog"}

    scored = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r})\n" + SCORE_IN_A_BARE_PYTHON,
            str(folder),
            json.dumps(val_texts),
            json.dumps(val_labels),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout) == pytest.approx(metrics["student"]["accuracy"], abs=1 / len(val_labels))
