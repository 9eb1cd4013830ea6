"""`distill files upload FOLDER`, `distill run` with a teacher folder and `Client.upload_model_folder`
against the real API: a transformers save_pretrained folder becomes an `hf` teacher, its pickled weights
converted to safetensors on the way; a bar shows the bytes sent on a terminal, and nothing off one."""

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from distill_client import Client
from tests.client.commands import run_distill
from tests.hf_archives import TOKENIZER_FILES, pickle_weights, tiny_bert, write_folder
from tests.stack import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def bert(tmp_path) -> tuple[Path, int]:
    """A tiny BertForSequenceClassification's save_pretrained folder, with a tokenizer, and its parameters."""
    files, parameters = tiny_bert()
    return write_folder(tmp_path / "bert", {**files, **TOKENIZER_FILES}), parameters


@pytest.fixture(scope="module")
def client(stack):
    with Client(stack.url, timeout=30, retries=2, backoff_seconds=0.1) as client:
        yield client


def upload(stack, *argv: str) -> subprocess.CompletedProcess:
    return run_distill("--json", "files", "upload", *argv, DISTILL_URL=stack.url)


def test_a_model_folder_is_an_hf_teacher_and_no_bar_is_drawn_off_a_terminal(stack, bert):
    folder, parameters = bert
    result = upload(stack, str(folder), "--purpose", "teacher")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar, nothing converted
    uploaded = json.loads(result.stdout)
    assert (uploaded["format"], uploaded["filename"]) == ("hf", "bert.zip")
    assert uploaded["model"]["parameters"] == parameters and uploaded["model"]["tokenizer"]


def test_pickled_weights_are_converted_here_and_never_sent(stack, client, bert, tmp_path):
    folder, parameters = bert
    pickle_weights(folder)
    result = upload(stack, str(folder), "--purpose", "teacher")
    assert result.returncode == 0, result.stderr
    assert "converted pytorch_model.bin to model.safetensors here" in result.stderr
    uploaded = client.get_file(json.loads(result.stdout)["id"])
    assert uploaded.format == "hf" and uploaded.model["parameters"] == parameters
    with zipfile.ZipFile(client.download_file(uploaded.id, tmp_path / "sent.zip")) as sent:
        names = sent.namelist()
    assert "model.safetensors" in names and not any(name.endswith(".bin") for name in names)


@pytest.mark.parametrize("purpose", ["dataset", "tokenizer"])
def test_a_folder_is_a_teacher_or_nothing(stack, bert, purpose):
    result = upload(stack, str(bert[0]), "--purpose", purpose)
    assert result.returncode == 2
    assert "is a folder: only a teacher may be one" in result.stderr
    assert f"upload the {purpose} as one file" in result.stderr


def test_the_client_uploads_a_model_folder(client, bert):
    folder, parameters = bert
    told = []
    uploaded = client.upload_model_folder(folder, on_progress=lambda sent, total: told.append((sent, total)))
    assert (uploaded.format, uploaded.filename) == ("hf", "bert.zip")
    assert uploaded.model["parameters"] == parameters
    assert told[-1] == (uploaded.bytes, uploaded.bytes)


def test_a_job_file_may_name_a_teacher_folder(stack, client, bert):
    """The folder is uploaded before the job is submitted (a job refused here: what this test looks at is
    the upload)."""
    folder, parameters = bert
    job = folder.parent / "job.yaml"
    job.write_text("teacher: {file: bert}\nstudent: {architecture: {family: mlp}}\ntraining: {epochs: 0}\n")
    result = run_distill("run", str(job), DISTILL_URL=stack.url)
    assert result.returncode == 2 and "refused: 422" in result.stderr, result.stderr
    newest = next(client.list_files("teacher"))
    assert (newest.filename, newest.format, newest.model["parameters"]) == ("bert.zip", "hf", parameters)


def test_on_a_terminal_a_bar_shows_the_bytes_sent(stack, bert):
    """Under a pseudo-terminal (`script`), rich draws the bar: the file, its bytes, their rate."""
    command = shlex.join([sys.executable, "-m", "cli", "files", "upload", str(bert[0]), "--purpose=teacher"])
    env = {**stack.env, "DISTILL_URL": stack.url, "COLUMNS": "160", "TERM": "xterm"}
    result = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)  # without the terminal's escapes
    assert re.search(r"uploading bert ━+ [\d.]+/[\d.]+ kB", drawn), drawn
