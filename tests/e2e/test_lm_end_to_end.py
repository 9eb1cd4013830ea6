"""A causal language model in, a smaller one out, as the README's tour runs it: `distill run` with the job
file of `examples/toy_language_model.py`, which names a llama's `save_pretrained` folder and text as JSON
Lines; the student derived from it through the real API and worker, token-level KD; the student folder
`distill run -o` unpacks generates in a Python that holds torch and transformers but none of the service's
packages, writing what the job showed it writing."""

import json
import subprocess
import sys
import sysconfig

import pytest

from examples import toy_language_model
from tests.stack import ROOT

pytestmark = pytest.mark.e2e

# Only the third-party packages: `-I -S` leaves out the working directory, the environment and the .pth
# files that put the project's own packages on the path.
GENERATE_IN_A_BARE_PYTHON = """
import json, sys
try:
    import engine
    sys.exit("the project's packages are importable")
except ImportError:
    pass
from transformers import pipeline
folder, prompt = sys.argv[1], sys.argv[2]
generate = pipeline("text-generation", model=folder)
generated = generate(prompt, max_new_tokens=24, do_sample=False, return_full_text=False)
print(json.dumps(generated[0]["generated_text"]))
"""


def test_the_tours_llama_folder_in_a_smaller_llama_that_generates_out(stack, tmp_path):
    toy_language_model.main(tmp_path)  # my-llama/, train.jsonl, validation.jsonl, job.yaml
    assert toy_language_model.JOB in (ROOT / "README.md").read_text(), "the README's tour runs another job"
    env = {**stack.env, "DISTILL_URL": stack.url}
    ran = subprocess.run(
        [sys.executable, "-m", "cli", "run", "job.yaml", "-o", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, f"{ran.stderr}\n{stack.logs()}"
    job = stack.client.job(ran.stderr.split("submitted ")[1].split()[0])
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
    purelib = sysconfig.get_paths()["purelib"]
    sample = metrics["samples"][0]
    generated = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.append({purelib!r})\n{GENERATE_IN_A_BARE_PYTHON}",
            str(folder),
            sample["prompt"],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout) == sample["student"]
