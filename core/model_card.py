"""A job's model card, `README.md` beside its student (Hugging Face style): a metadata block, then what
was distilled from what and how, on which data (by sha256), what it measured, its gates, and how to run
the student with PyTorch and with ONNX Runtime."""

import json
from dataclasses import dataclass

from core.gates import describe
from engine.plan.hf_models import PRETRAINED_ARTIFACT

MODEL_CARD = "README.md"
PIPELINE_TAGS = {"text": "text-classification", "image": "image-classification"}


@dataclass(frozen=True)
class CardFile:
    role: str  # teacher, train, validation, tokenizer
    filename: str
    sha256: str


def model_card(job_id: str, request: dict, metrics: dict, files: list[CardFile], artifacts: list[str]) -> str:
    student = request["student"]["architecture"]
    sections = [
        _metadata(job_id, request, metrics, files),
        f"# Student of job {job_id}\n\n{_summary(request, metrics)}",
        "## Data\n\n" + "\n".join(f"- {f.role}: `{f.filename}` (sha256 `{f.sha256}`)" for f in files),
        "## Results on the validation set\n\n" + _results(metrics),
    ]
    if metrics.get("gates"):
        sections.append("## Gates\n\n" + "\n".join(f"- {describe(gate)}" for gate in metrics["gates"]))
    sections.append(_usage(student, artifacts))
    return "\n\n".join(sections) + "\n"


def _metadata(job_id: str, request: dict, metrics: dict, files: list[CardFile]) -> str:
    """The card's YAML block (JSON values, which YAML reads); for a transformers student, the model hub's
    fields too, so that the unpacked `student.hf.zip` can be pushed to a hub as it is."""
    student = request["student"]["architecture"]
    values = {
        "library_name": "distill",
        "tags": ["knowledge-distillation", student["family"]],
        "job": job_id,
        "student_accuracy": metrics["student"]["accuracy"],
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "compression": round(metrics["compression"], 3),
    }
    if student["family"] == "hf":
        values |= _hub_metadata(job_id, request, metrics, files)
    return "---\n" + "\n".join(f"{key}: {json.dumps(value)}" for key, value in values.items()) + "\n---"


def _hub_metadata(job_id: str, request: dict, metrics: dict, files: list[CardFile]) -> dict:
    task = student_input(request["student"]["architecture"])
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
    """The teacher's and the student's accuracy where they were measured: on the validation file, or on a
    hold-out of the training file."""
    by_role = {file.role: file.filename for file in files}
    measured_on = by_role.get("validation") or by_role.get("train")
    accuracies = [
        {"type": "accuracy", "name": f"{who} accuracy", "value": metrics[who]["accuracy"]}
        for who in ("student", "teacher")
        if metrics[who]["accuracy"] is not None
    ]
    if measured_on is None or not accuracies:
        return []
    dataset = {"name": measured_on, "type": measured_on}
    return [{"task": {"type": PIPELINE_TAGS[task]}, "dataset": dataset, "metrics": accuracies}]


def student_input(student: dict) -> str:
    """`image` for a model of images, `text` for one of token ids."""
    return "image" if student.get("input_shape") is not None else "text"


def _summary(request: dict, metrics: dict) -> str:
    family, how = request["student"]["architecture"]["family"], _chosen(request, metrics)
    return (
        f"A student of the `{family}` family ({metrics['student']['parameters']:,} parameters) distilled "
        f"from {_teachers(request, metrics)} with the `{how['method']}` method: temperature "
        f"{how['temperature']}, alpha {how['alpha']}, beta {how['beta']}, {_soft_loss(how)}."
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


def _results(metrics: dict) -> str:
    table = "\n".join(f"| {' | '.join(row)} |" for row in _rows(metrics))
    return table + "\n\n" + "\n".join(f"- {line}" for line in _findings(metrics))


def _rows(metrics: dict) -> list[tuple[str, ...]]:
    """The table's rows: the teacher beside the student."""
    teacher, student = metrics["teacher"], metrics["student"]
    rows = [
        ("", "teacher", "student"),
        ("---",) * 3,
        ("accuracy", _share(teacher["accuracy"]), _share(student["accuracy"])),
        ("parameters", f"{teacher['parameters']:,}", f"{student['parameters']:,}"),
    ]
    if "latency_ms" in student:
        for batch in ("batch_1", "batch_64"):
            label = f"ms per sample, {batch.replace('_', ' ')}"
            rows.append((label, f"{teacher['latency_ms'][batch]:.4g}", f"{student['latency_ms'][batch]:.4g}"))
    return rows


def _findings(metrics: dict) -> list[str]:
    """The list under the table."""
    lines = [
        f"agreement with the teacher: {_share(metrics['agreement'])}",
        f"compression: {metrics['compression']:.1f}x fewer parameters",
    ]
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


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _usage(student: dict, artifacts: list[str]) -> str:
    images = student_input(student) == "image"
    shape = [2, *student["input_shape"]] if images else [2, student["max_length"]]
    torch_input = f"torch.zeros({shape})" if images else f"torch.zeros({shape}, dtype=torch.long)"
    usage = [
        "## How to run it\n\nWith PyTorch alone (no code of ours):\n\n```python\nimport torch\n\n"
        f'student = torch.export.load("student.pt2").module()\nlogits = student({torch_input})\n```'
    ]
    if "student.onnx" in artifacts:
        usage.append(
            "With ONNX Runtime and numpy:\n\n```python\nimport numpy as np\nimport onnxruntime\n\n"
            'session = onnxruntime.InferenceSession("student.onnx")\n'
            f"x = np.zeros({shape}, dtype={'np.float32' if images else 'np.int64'})\n"
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]\n```"
        )
    if PRETRAINED_ARTIFACT in artifacts:
        usage.insert(0, _pretrained_usage(student_input(student)))
    return "\n\n".join(usage)


def _pretrained_usage(task: str) -> str:
    kind = "SequenceClassification" if task == "text" else "ImageClassification"
    example = '"A question to classify?"' if task == "text" else 'Image.open("picture.png")'
    imports = "from transformers import pipeline" + ("\nfrom PIL import Image" if task == "image" else "")
    return (
        f"With transformers, from the unpacked `{PRETRAINED_ARTIFACT}` (`distill run -o DIR` unpacks it to "
        f"`DIR/student.hf/`), which holds this card:\n\n```python\n{imports}\n\n"
        f'classify = pipeline("{PIPELINE_TAGS[task]}", model="student.hf")\n'
        f"print(classify({example}))\n```\n\n"
        f'or `AutoModelFor{kind}.from_pretrained("student.hf")`.'
    )
