"""A job's model card, `README.md` beside its student (Hugging Face style): a metadata block, then what
was distilled from what and how, on which data (by sha256), what it measured, its gates, and how to run
the student with PyTorch and with ONNX Runtime. A causal language model's card (its metrics have `task`
`causal-lm`) reports perplexity, next-token accuracy and agreement, the KL to the teacher and a few sample
generations, and runs the student in a `text-generation` pipeline; a LoRA student's card says what its
adapter, `student.lora.zip`, applies to."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from core.gates import describe
from engine.plan.hf_models import LORA_ARTIFACT, PRETRAINED_ARTIFACT
from engine.plan.lora_adapters import ADAPTER_BASES

MODEL_CARD = "README.md"
CAUSAL_LM = "causal-lm"
PIPELINE_TAGS = {"text": "text-classification", "image": "image-classification", CAUSAL_LM: "text-generation"}
# How the transformers usage runs the student: the pipeline's name, its line that prints, its AutoModel.
PIPELINE_CALLS = {
    "text": ("classify", 'print(classify("A question to classify?"))', "SequenceClassification"),
    "image": ("classify", 'print(classify(Image.open("picture.png")))', "ImageClassification"),
    CAUSAL_LM: (
        "generate",
        'print(generate("Once upon a time", max_new_tokens=40)[0]["generated_text"])',
        "CausalLM",
    ),
}


@dataclass(frozen=True)
class CardFile:
    role: str  # teacher, train, validation, tokenizer
    filename: str
    sha256: str


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


class Measure(NamedTuple):
    """What the card reports of the teacher and the student: a key of each model's metrics, in words."""

    key: str
    label: str
    shown: Callable[[float | None], str]


# By the student's task; the first is the one the hub's `model-index` gives.
CLASSIFIER_MEASURES = (Measure("accuracy", "accuracy", _share),)
LM_MEASURES = (
    Measure("perplexity", "perplexity", _figure),
    Measure("accuracy", "next-token accuracy", _share),
)


def model_card(job_id: str, request: dict, metrics: dict, files: list[CardFile], artifacts: list[str]) -> str:
    student = request["student"]["architecture"]
    task = metrics.get("task") or student_input(student)
    sections = [
        _metadata(job_id, request, metrics, files, task),
        f"# Student of job {job_id}\n\n{_summary(request, metrics, task)}",
        "## Data\n\n" + "\n".join(f"- {f.role}: `{f.filename}` (sha256 `{f.sha256}`)" for f in files),
        "## Results on the validation set\n\n" + _results(metrics, task),
    ]
    if metrics.get("samples"):
        sections.append("## Sample generations\n\n" + _samples(metrics["samples"]))
    if metrics.get("gates"):
        sections.append("## Gates\n\n" + "\n".join(f"- {describe(gate)}" for gate in metrics["gates"]))
    sections.append(_usage(student, artifacts, task))
    if LORA_ARTIFACT in artifacts:
        sections.append(_adapter(metrics["lora"]))
    return "\n\n".join(sections) + "\n"


def _measures(task: str) -> tuple[Measure, ...]:
    return LM_MEASURES if task == CAUSAL_LM else CLASSIFIER_MEASURES


def _metadata(job_id: str, request: dict, metrics: dict, files: list[CardFile], task: str) -> str:
    """The card's YAML block (JSON values, which YAML reads); for a transformers student, the model hub's
    fields too, so that the unpacked `student.hf.zip` can be pushed to a hub as it is."""
    student = request["student"]["architecture"]
    values = {
        "library_name": "distill",
        "tags": ["knowledge-distillation", student["family"]],
        "job": job_id,
    }
    for measure in _measures(task):
        values |= {f"{who}_{measure.key}": metrics[who][measure.key] for who in ("student", "teacher")}
    values["compression"] = round(metrics["compression"], 3)
    if student["family"] == "hf":
        values |= _hub_metadata(job_id, request, metrics, files, task)
    return "---\n" + "\n".join(f"{key}: {json.dumps(value)}" for key, value in values.items()) + "\n---"


def _hub_metadata(job_id: str, request: dict, metrics: dict, files: list[CardFile], task: str) -> dict:
    teacher = (request["teachers"] or [request["teacher"]])[0]
    base_model = (teacher.get("architecture") or {}).get("config", {}).get("_name_or_path")
    hub = {
        "library_name": "transformers",
        "pipeline_tag": PIPELINE_TAGS[task],
        "datasets": [file.filename for file in files if file.role in ("train", "validation")],
        "model-index": [{"name": f"student-{job_id}", "results": _hub_results(task, metrics, files)}],
    }
    if isinstance(base_model, str) and base_model and not base_model.startswith(("/", ".")):
        hub["base_model"] = base_model  # a hub id the teacher was saved from, never a local path
    return hub


def _hub_results(task: str, metrics: dict, files: list[CardFile]) -> list[dict]:
    """The teacher's and the student's headline measure (accuracy; a language model's perplexity) where they
    were measured: on the validation file, or on a hold-out of the training file."""
    by_role = {file.role: file.filename for file in files}
    measured_on = by_role.get("validation") or by_role.get("train")
    key = _measures(task)[0].key
    measured = [
        {"type": key, "name": f"{who} {key}", "value": metrics[who][key]}
        for who in ("student", "teacher")
        if metrics[who][key] is not None
    ]
    if measured_on is None or not measured:
        return []
    dataset = {"name": measured_on, "type": measured_on}
    return [{"task": {"type": PIPELINE_TAGS[task]}, "dataset": dataset, "metrics": measured}]


def student_input(student: dict) -> str:
    """`image` for a model of images, `text` for one of token ids."""
    return "image" if student.get("input_shape") is not None else "text"


def _summary(request: dict, metrics: dict, task: str) -> str:
    family, how = request["student"]["architecture"]["family"], _chosen(request, metrics)
    objective = _divergence(how) if task == CAUSAL_LM else _soft_loss(how)
    return (
        f"A student of the `{family}` family ({metrics['student']['parameters']:,} parameters) distilled "
        f"from {_teachers(request, metrics)} with the `{how['method']}` method: temperature "
        f"{how['temperature']}, alpha {how['alpha']}, beta {how['beta']}, {objective}."
    )


def _chosen(request: dict, metrics: dict) -> dict:
    """The request's distillation settings, with what an `auto` search chose in place of `auto`."""
    search = metrics.get("search") or {}
    return request["distillation"] | {
        name: search[name] for name in ("temperature", "alpha", "soft_loss") if name in search
    }


def _soft_loss(how: dict) -> str:
    """The soft loss by name, with its weights where it has some (`dkd`, `dist`: the request's field of the
    same name) and the logit standardisation where it was on; a request from before these had neither."""
    words = f"soft loss `{how['soft_loss']}`"
    weights = how.get(how["soft_loss"])
    if weights:
        words += " (" + ", ".join(f"{name} {value}" for name, value in weights.items()) + ")"
    if how.get("logit_standardization"):
        words += " on standardised logits"
    return words


def _divergence(how: dict) -> str:
    """A language model's token-level divergence, with the JSD's teacher share."""
    words = f"token divergence `{how['divergence']}`"
    return words + (f" (jsd_beta {how['jsd_beta']})" if how["divergence"] == "jsd" else "")


def _teachers(request: dict, metrics: dict) -> str:
    count = len(request["teachers"] or [request["teacher"]])
    teachers = "a teacher" if count == 1 else f"{count} teachers"
    return f"{teachers} of {metrics['teacher']['parameters']:,} parameters"


def _cpu_latency(onnx: dict) -> str:
    latency = onnx.get("latency_ms")
    if latency is None:
        return ""
    return (
        f", {latency['batch_1']:.4g} ms per sample at batch 1 and {latency['batch_64']:.4g} at 64 on the CPU"
    )


def _results(metrics: dict, task: str) -> str:
    table = "\n".join(f"| {' | '.join(row)} |" for row in _rows(metrics, task))
    return table + "\n\n" + "\n".join(f"- {line}" for line in _findings(metrics, task))


def _rows(metrics: dict, task: str) -> list[tuple[str, ...]]:
    """The table's rows: the teacher beside the student."""
    teacher, student = metrics["teacher"], metrics["student"]
    rows = [("", "teacher", "student"), ("---",) * 3]
    rows += [(m.label, m.shown(teacher[m.key]), m.shown(student[m.key])) for m in _measures(task)]
    rows.append(("parameters", f"{teacher['parameters']:,}", f"{student['parameters']:,}"))
    if "latency_ms" in student:
        for batch in ("batch_1", "batch_64"):
            label = f"ms per sample, {batch.replace('_', ' ')}"
            rows.append((label, f"{teacher['latency_ms'][batch]:.4g}", f"{student['latency_ms'][batch]:.4g}"))
    return rows


def _findings(metrics: dict, task: str) -> list[str]:
    """The list under the table."""
    if task == CAUSAL_LM:
        lines = [
            f"top-1 next-token agreement with the teacher: {_share(metrics['agreement'])}",
            f"KL(teacher || student): {metrics['kl_to_teacher']:.4g} nats per token, on "
            f"{metrics['tokens']:,} validation tokens",
        ]
    else:
        lines = [f"agreement with the teacher: {_share(metrics['agreement'])}"]
    lines.append(f"compression: {metrics['compression']:.1f}x fewer parameters")
    if speedup := metrics.get("speedup"):
        lines.append(
            f"speed-up: {speedup['batch_1']:.2f}x at batch 1, {speedup['batch_64']:.2f}x at batch 64 on "
            f"{metrics['latency_device']}"
        )
    if onnx := metrics.get("onnx"):
        lines.append(
            f"`student.onnx` under ONNX Runtime: accuracy {_share(onnx['accuracy'])}, agreement with "
            f"PyTorch {_share(onnx['agreement'])}, largest difference {onnx['max_abs_difference']:.2g}"
            f"{_cpu_latency(onnx)}"
        )
    return lines


def _samples(samples: list[dict]) -> str:
    """Each prompt with the teacher's and the student's continuations, as written (in a fence longer than any
    run of backticks they hold)."""
    blocks = []
    for sample in samples:
        lines = [
            f"{who + ':':<9}" + sample[who].replace("\n", "\n" + " " * 9)
            for who in ("prompt", "teacher", "student")
        ]
        text = "\n".join(lines)
        fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
        blocks.append(f"{fence}text\n{text}\n{fence}")
    return "\n\n".join(blocks)


def _usage(student: dict, artifacts: list[str], task: str) -> str:
    images = task == "image"
    shape = [2, *student["input_shape"]] if images else [2, student["max_length"]]
    torch_input = f"torch.zeros({shape})" if images else f"torch.zeros({shape}, dtype=torch.long)"
    usage = ["## How to run it"]
    if PRETRAINED_ARTIFACT in artifacts:
        usage.append(_pretrained_usage(task))
    if "student.pt2" in artifacts:
        usage.append(
            "With PyTorch alone (no code of ours):\n\n```python\nimport torch\n\n"
            f'student = torch.export.load("student.pt2").module()\nlogits = student({torch_input})\n```'
        )
    if "student.onnx" in artifacts:
        usage.append(
            "With ONNX Runtime and numpy:\n\n```python\nimport numpy as np\nimport onnxruntime\n\n"
            'session = onnxruntime.InferenceSession("student.onnx")\n'
            f"x = np.zeros({shape}, dtype={'np.float32' if images else 'np.int64'})\n"
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]\n```"
        )
    return "\n\n".join(usage)


def _pretrained_usage(task: str) -> str:
    name, printed, kind = PIPELINE_CALLS[task]
    imports = "from transformers import pipeline" + ("\nfrom PIL import Image" if task == "image" else "")
    return (
        f"With transformers, from the unpacked `{PRETRAINED_ARTIFACT}` (`distill run -o DIR` unpacks it to "
        f"`DIR/student.hf/`), which holds this card:\n\n```python\n{imports}\n\n"
        f'{name} = pipeline("{PIPELINE_TAGS[task]}", model="student.hf")\n{printed}\n```\n\n'
        f'or `AutoModelFor{kind}.from_pretrained("student.hf")`.'
    )


def _adapter(lora: dict) -> str:
    """A LoRA student's adapter, kept apart from the merged student: what it holds and what it applies to;
    where that is the teacher, how peft puts them together."""
    text = (
        f"## The LoRA adapter\n\n`{LORA_ARTIFACT}` holds the adapter alone, as peft saves it "
        f"(`adapter_config.json`, `adapter_model.safetensors`): rank {lora['r']}, alpha {lora['alpha']:g} on "
        f"{', '.join(f'`{target}`' for target in lora['target_modules'])}, {lora['trainable_parameters']:,} "
        f"trained parameters; every other weight stayed as it started. `{PRETRAINED_ARTIFACT}` is the "
        f"student with it merged in. It applies to {ADAPTER_BASES[lora['base']]}."
    )
    if lora["base"] != "teacher":
        return text
    return (
        f"{text}\n\n```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        'teacher = AutoModelForCausalLM.from_pretrained("teacher")  # the teacher\'s folder\n'
        f'student = PeftModel.from_pretrained(teacher, "student.lora")  # {LORA_ARTIFACT}, unpacked\n```'
    )
