"""A causal language model in, a smaller one out, as the README's tour runs it: `distill run` with the job
file of `examples/toy_language_model.py`, which names a llama's `save_pretrained` folder and text as JSON
Lines; the student derived from it through the real API and worker, token-level KD; the student folder
`distill run -o` unpacks generates in a Python that holds torch and transformers but none of the service's
packages, writing what the job showed it writing. A LoRA copy of the teacher comes out merged and as an
adapter that peft puts on the teacher folder."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from examples import toy_language_model
from tests.e2e.outside import distill_run, in_a_bare_python
from tests.lm_factories import write_jsonl
from tests.lm_model_factories import TEXTS, lm_folder, lm_token_ids
from tests.stack import ROOT

pytestmark = pytest.mark.e2e

GENERATE = """
import json
from transformers import pipeline
folder, prompt = sys.argv[1], sys.argv[2]
generate = pipeline("text-generation", model=folder)
generated = generate(prompt, max_new_tokens=24, do_sample=False, return_full_text=False)
print(json.dumps(generated[0]["generated_text"]))
"""


def test_the_tours_llama_folder_in_a_smaller_llama_that_generates_out(stack, tmp_path):
    toy_language_model.main(tmp_path)  # my-llama/, train.jsonl, validation.jsonl, job.yaml
    assert toy_language_model.JOB in (ROOT / "README.md").read_text(), "the README's tour runs another job"
    job = distill_run(stack, tmp_path, toy_language_model.JOB)
    teacher = stack.client.get(f"/v1/files/{job['request']['teacher']['file_id']}").json()
    assert (teacher["format"], teacher["model"]["task"]) == ("hf", "causal-lm")
    student = job["request"]["student"]["architecture"]
    assert (student["config"]["model_type"], student["config"]["num_hidden_layers"]) == ("llama", 2)
    metrics = job["metrics"]
    assert metrics["task"] == "causal-lm" and metrics["gates"][0]["passed"]
    assert metrics["student"]["perplexity"] > 1 and metrics["student"]["parameters"] == student["parameters"]
    points = stack.client.get(f"/v1/jobs/{job['id']}/metrics").json()["data"]
    assert {"soft_loss", "validation_perplexity", "validation_kl"} <= {point["name"] for point in points}
    events = stack.client.event_messages(job["id"])
    assert sum(message.startswith("Sample ") for message in events) == 3

    folder = tmp_path / "out" / "student.hf"
    card = (folder / "README.md").read_text()
    assert 'pipeline_tag: "text-generation"' in card and job["id"] in card
    assert (folder / "generation_config.json").is_file() and (folder / "tokenizer.json").is_file()
    sample = metrics["samples"][0]
    generated = in_a_bare_python(GENERATE, str(folder), sample["prompt"], cwd=tmp_path)
    assert json.loads(generated) == sample["student"]


def test_a_lora_copy_of_a_llama_comes_out_merged_and_as_an_adapter_of_the_llama(stack, tmp_path):
    teacher = lm_folder(tmp_path / "my-llama", "llama")
    write_jsonl(tmp_path / "train.jsonl", [{"text": text} for text in TEXTS * 2])
    job = distill_run(
        stack,
        tmp_path,
        "teacher: {file: my-llama}\n"
        "student: {derive: {depth: 1, width: 1}, lora: {r: 4}}\n"
        "dataset: {train_file: train.jsonl, max_length: 16}\n"
        "distillation: {alpha: 0.5, beta: 0.5}\n"  # a copy of the teacher learns what the data adds
        "training: {epochs: 1, batch_size: 4, learning_rate: 0.01}\n",
    )
    artifacts = stack.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    types = {artifact["name"]: artifact["content_type"] for artifact in artifacts}
    assert types["student.hf.zip"] == types["student.lora.zip"] == "application/zip"
    assert types["README.md"].startswith("text/markdown")
    assert job["metrics"]["lora"]["base"] == "teacher"
    out = tmp_path / "out"
    assert "## The LoRA adapter" in (out / "student.hf" / "README.md").read_text()
    merged = AutoModelForCausalLM.from_pretrained(out / "student.hf").eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(teacher), out / "student.lora"
    ).eval()
    ids = lm_token_ids()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=0, atol=1e-5)
