"""A causal language model distilled through the service, end to end over HTTP, the downloaded students
measured outside it.

The teacher: a llama (4 layers, 256 wide, a 2,048-token byte-level BPE vocabulary: 4.2M parameters) trained
here with plain transformers on tinyshakespeare's training text (`--data`, default
../shared/datasets/tinyshakespeare, split 90/10 at a line, see its PROVENANCE.md), uploaded as a zip. Its
student, derived from it (depth 0.5, width 0.5, started from its weights Minitron-style: about a quarter of
its parameters), is trained by one job per objective on the first quarter of the training text's speeches
(`text` records, packed into blocks) and validated on the validation text's: alone (the next-token
cross-entropy only; twice, over the others' 10 epochs and over 6, as it overfits by the tenth), and distilled
token by token, from the teacher's generations and on its own. The students
see a quarter of what the teacher learnt from, as a distillation service's users do (a teacher trained on more
than the data at hand); on the whole text, this student alone matches this teacher. Each downloaded
`student.hf` folder is loaded with transformers' Auto classes: validation perplexity over the validation text
cut into blocks (every token after a block's first), parameters, tokens per second of a forward pass at batch
32 and of greedy generation at batch 1. Also: each job's epochs timed from here, the job process's peak
memory, and the token-level loss's peak memory at growing vocabularies, chunked and not
(`benchmarks.llm_memory`).

    nice -n 5 .venv/bin/python -m benchmarks.llm [--quick] [--threads 1] [--data DIR] [--url URL]

`--quick` shrinks the data and epochs to a smoke check of a few minutes; its figures mean nothing. Writes
benchmarks/results/llm.json (with --quick: llm-quick.json) and prints the table."""

import io
import statistics
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from benchmarks.common import (
    RESULTS,
    ROOT,
    Timer,
    add_threads_option,
    argument_parser,
    machine,
    service,
    upload_files,
    write_result,
)
from benchmarks.hf import configure, timed_job
from benchmarks.hf_measure import ms_per_sample
from benchmarks.hf_teachers import archived
from benchmarks.llm_memory import memory_figures
from benchmarks.llm_teacher import (
    blocks,
    paragraphs,
    perplexity,
    token_stream,
    trained_llama,
    trained_tokenizer,
)
from tests.lm_factories import write_jsonl
from tests.service_client import ServiceClient

TINYSHAKESPEARE = ROOT.parent / "shared" / "datasets" / "tinyshakespeare"
TEACHER = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=256)  # fmt: skip
STUDENT = {"derive": {"depth": 0.5, "width": 0.5, "init": "teacher"}}
OBJECTIVES = {
    "alone": {"alpha": 0.0, "beta": 1.0},
    # On a quarter of the text the student alone overfits before the last epoch: the gap is taken from the
    # better of its two runs.
    "alone, 6 epochs": {"alpha": 0.0, "beta": 1.0},
    "token-level KD": {"alpha": 0.9, "beta": 0.1, "divergence": "forward_kl"},  # the request's defaults
    # The teacher continues each block's first quarter; the student learns its completions token by token.
    "sequence-level KD": {
        "alpha": 0.5,
        "beta": 0.5,
        "sequence_level": {"temperature": 1.0, "max_new_tokens": 96},
    },
    # Half the steps on the student's own continuations of the blocks' first quarter (GKD's JSD).
    "on-policy KD": {
        "alpha": 0.9,
        "beta": 0.1,
        "divergence": "jsd",
        "on_policy": {"share": 0.5, "max_new_tokens": 32},
    },
}
ALONE = ("alone", "alone, 6 epochs")
SHORTER = {"alone, 6 epochs": 6}  # epochs, where an objective's run is shorter than the others'
GENERATED_TOKENS = 64


@dataclass(frozen=True)
class Sizes:
    vocab: int
    block: int  # tokens per block, teacher and students
    train_paragraphs: int | None  # the training text's first speeches (None: all), the teacher's
    student_share: float  # the share of those (the first ones) the students learn from
    validation_paragraphs: int | None
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    learning_rate: float
    memory_tokens: int  # of the loss's memory figures


FULL = Sizes(
    vocab=2048,
    block=128,
    train_paragraphs=None,
    student_share=0.25,
    validation_paragraphs=None,
    teacher_epochs=8,
    student_epochs=10,
    batch_size=32,
    learning_rate=1e-3,
    memory_tokens=2048,
)
QUICK = Sizes(
    vocab=512,
    block=64,
    train_paragraphs=600,
    student_share=0.5,
    validation_paragraphs=100,
    teacher_epochs=1,
    student_epochs=1,
    batch_size=32,
    learning_rate=1e-3,
    memory_tokens=256,
)


def main() -> None:
    parser = argument_parser(__doc__, "llm")
    parser.set_defaults(data=TINYSHAKESPEARE)
    parser.add_argument("--quick", action="store_true", help="a smoke check of a few minutes")
    add_threads_option(parser)
    args = parser.parse_args()
    configure(args.threads)
    sizes = QUICK if args.quick else FULL
    out = RESULTS / "llm-quick.json" if args.quick and args.out == RESULTS / "llm.json" else args.out
    with Timer() as clock, tempfile.TemporaryDirectory(prefix="distill-bench-llm-") as tmp:
        task = Task(args.data, sizes, Path(tmp))
        with service(args.url, args.api_key, Path(tmp) / "home") as client:
            result = task.run(client)
    result["loss_memory"] = memory_figures(sizes.memory_tokens, TEACHER["hidden_size"])
    result = {"benchmark": "llm", "machine": machine(), "quick": args.quick, "sizes": asdict(sizes), **result,
              "seconds": clock.seconds}  # fmt: skip
    result["goals"] = goals(result)
    write_result(out, result)
    print(report(result))


class Task:
    """The teacher made here, the text its students read, their jobs and the measurements."""

    def __init__(self, data: Path, sizes: Sizes, folder: Path):
        self.sizes, self.folder = sizes, folder
        train_text = paragraphs((data / "train.txt").read_text())[: sizes.train_paragraphs]
        validation_text = paragraphs((data / "validation.txt").read_text())[: sizes.validation_paragraphs]
        self.tokenizer = trained_tokenizer("\n\n".join(train_text), sizes.vocab)
        student_text = train_text[: round(sizes.student_share * len(train_text))]
        self.train = write_jsonl(folder / "train.jsonl", [{"text": text} for text in student_text])
        self.student_tokens = len(token_stream(self.tokenizer, student_text))
        self.validation = write_jsonl(
            folder / "validation.jsonl", [{"text": text} for text in validation_text]
        )
        self.train_blocks = blocks(token_stream(self.tokenizer, train_text), sizes.block)
        self.validation_blocks = blocks(token_stream(self.tokenizer, validation_text), sizes.block)

    def run(self, client: ServiceClient) -> dict:
        sizes = self.sizes
        with Timer() as clock:
            teacher, losses = trained_llama(
                self.folder / "teacher",
                self.tokenizer,
                self.train_blocks,
                TEACHER,
                epochs=sizes.teacher_epochs,
                batch_size=sizes.batch_size,
            )
        ids = upload_files(
            client, {"teacher": archived(teacher), "train": self.train, "validation": self.validation}
        )
        students = {
            name: self.student(client, ids, name, objective) for name, objective in OBJECTIVES.items()
        }
        return {
            "tokens": {
                "teacher_train": self.train_blocks.numel(),
                "student_train": self.student_tokens,
                "validation": self.validation_blocks.numel(),
            },
            "teacher": self.scores(teacher) | {"training_seconds": clock.seconds, "training_losses": losses},
            "students": students,
        }

    def student(self, client: ServiceClient, ids: dict[str, str], name: str, objective: dict) -> dict:
        sizes = self.sizes
        request = {
            "teacher": {"file_id": ids["teacher"]},
            "student": STUDENT,
            "dataset": {
                "train_file_id": ids["train"],
                "validation_file_id": ids["validation"],
                "max_length": sizes.block,
            },  # fmt: skip
            "distillation": objective,
            "training": {
                "epochs": min(SHORTER.get(name, sizes.student_epochs), sizes.student_epochs),
                "batch_size": sizes.batch_size,
                "learning_rate": sizes.learning_rate,
            },  # fmt: skip
        }
        job, epoch_seconds = timed_job(client, request)
        folder = self.folder / name.replace(" ", "-")
        with zipfile.ZipFile(io.BytesIO(client.artifact(job["id"], "student.hf.zip"))) as archive:
            archive.extractall(folder)
        metrics = job["metrics"]
        return self.scores(folder) | {
            "job": {
                "id": job["id"],
                "worker_seconds": job["finished_at"] - job["started_at"],
                "epoch_seconds": epoch_seconds,
                "reported_perplexity": metrics["student"]["perplexity"],
                "reported_teacher_perplexity": metrics["teacher"]["perplexity"],
                "kl_to_teacher": metrics["kl_to_teacher"],
                "agreement": metrics["agreement"],
                "peak_memory": metrics.get("peak_memory"),
                "teacher_cache": metrics.get("teacher_cache"),
                "samples": metrics["samples"],
            }
        }

    @torch.inference_mode()
    def scores(self, folder: Path) -> dict:
        """A save_pretrained folder's validation perplexity, parameters and tokens per second."""
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        batch = self.validation_blocks[: self.sizes.batch_size]
        forward_ms = ms_per_sample(lambda ids: model(input_ids=ids), batch, len(batch))
        return {
            "perplexity": round(perplexity(model, self.validation_blocks), 3),
            "parameters": model.num_parameters(),
            "forward_tokens_per_second": round(1000 * self.sizes.block / forward_ms),
            "generated_tokens_per_second": round(generation_speed(model, self.validation_blocks[:1, :16])),
        }


def generation_speed(model, prompt: torch.Tensor) -> float:
    """Tokens per second of greedy generation of GENERATED_TOKENS after `prompt` [1, L], the best of three."""
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GENERATED_TOKENS,
                       min_new_tokens=GENERATED_TOKENS, do_sample=False, pad_token_id=0)  # fmt: skip
        seconds.append(time.perf_counter() - started)
    return GENERATED_TOKENS / min(seconds)


# --- goals and the table ----------------------------------------------------------------------


def gap_closed(result: dict, name: str) -> float | None:
    """(alone - distilled) / (alone - teacher) perplexity, the student alone's better run; None where the
    student alone is as good."""
    alone = min(result["students"][name]["perplexity"] for name in ALONE)
    teacher = result["teacher"]["perplexity"]
    gap = alone - teacher
    return None if gap <= 0 else (alone - result["students"][name]["perplexity"]) / gap


def epoch_ratio(result: dict, name: str) -> float:
    """The median epoch of a distillation job over the student-alone job's."""
    distilled, alone = (
        statistics.median(result["students"][n]["job"]["epoch_seconds"]) for n in (name, "alone")
    )
    return distilled / alone


def goals(result: dict) -> dict:
    distilled = [name for name in result["students"] if name not in ALONE]
    best = min(distilled, key=lambda name: result["students"][name]["perplexity"])
    closed = gap_closed(result, best)
    memory = {(row["vocab"], row["chunked"]): row["peak_growth_mib"] for row in result["loss_memory"]}
    vocabularies = sorted({vocab for vocab, _chunked in memory})
    growth = memory[(vocabularies[-1], True)] - memory[(vocabularies[0], True)]
    chunk_mib = max(row["chunk_logits_mib"] for row in result["loss_memory"] if row["chunked"])
    ratio = epoch_ratio(result, "token-level KD")
    return {
        "gap_closed": {
            "best": best,
            "value": closed,
            "goal": ">= 0.4",
            "met": closed is not None and closed >= 0.4,
        },
        "epoch_ratio": {
            "value": round(ratio, 3),
            "goal": "<= 1.2 (the teacher-output cache's epoch)",
            "met": ratio <= 1.2,
        },  # fmt: skip
        "loss_memory_growth_mib": {
            "value": growth,
            "goal": f"<= one chunk ({chunk_mib} MiB)",
            "met": growth <= chunk_mib,
        },  # fmt: skip
    }


def report(result: dict) -> str:
    teacher = result["teacher"]
    lines = [
        "| model | parameters | validation perplexity | gap closed | forward tokens/s (batch 32) | "
        "generated tokens/s |",
        "|---|---|---|---|---|---|",
        f"| teacher | {teacher['parameters']:,} | {teacher['perplexity']:.2f} | | "
        f"{teacher['forward_tokens_per_second']:,} | {teacher['generated_tokens_per_second']:,} |",
    ]
    for name, student in result["students"].items():
        closed = gap_closed(result, name) if name not in ALONE else None
        lines.append(
            f"| student, {name} | {student['parameters']:,} | {student['perplexity']:.2f} | "
            f"{'' if closed is None else f'{closed:.0%}'} | {student['forward_tokens_per_second']:,} | "
            f"{student['generated_tokens_per_second']:,} |"
        )
    lines.append("")
    for name, goal in result["goals"].items():
        lines.append(f"- {name}: {goal['value']} (goal {goal['goal']}): {'met' if goal['met'] else 'MISSED'}")
    lines.append(f"- seconds: {result['seconds']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
