"""Which soft loss, and whether the `auto` search, best closes the gap between a student alone and its
teacher: MNIST, every student through the HTTP API and measured from its downloaded student.pt2.

A convolutional teacher (PyTorch's MNIST example, `benchmarks.epoch_cost`), trained here with plain
PyTorch for `--teacher-epochs` and uploaded as a pt2 program; Hinton's 784-800-800-10 MLP student. Every
job trains on the 60,000 training images with the request's defaults except what its row sets; the jobs'
validation set is the service's seeded hold-out of them (so that `auto` chooses on data that is not the
test set), and each student.pt2 is run with plain `torch.export.load` on the 10,000 test images. Rows:
the student alone (alpha 0, beta 1), KD at each T of the `auto` search's default grid and at two beyond
it, DKD, DIST, KD on standardised logits, and `auto` within its default budget over T alone, over T,
alpha and the soft loss, and over T and the learning rate; each row once per seed of `--seeds`. The gap
closed is (alone − distilled) / (alone − teacher), in the mean test errors.

    nice -n 10 .venv/bin/python -m benchmarks.logit_losses [--epochs 10] [--teacher-epochs 4] \
        [--seeds 0 1] [--url URL]
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    IMAGE_STUDENT,
    Timer,
    argument_parser,
    exported_predictions,
    machine,
    mnist_images,
    service,
    trained_two_conv_teacher,
    two_conv_job_files,
    write_result,
)
from engine.plan.specs import Search
from tests.service_client import ServiceClient

STUDENT = IMAGE_STUDENT
BEYOND_THE_GRID = [32.0, 64.0]  # whether the grid's largest T is where the gains end
ROWS = {
    "alone": {"alpha": 0.0, "beta": 1.0},
    **{f"KD T={t:g}": {"temperature": t} for t in Search().temperatures},
    **{f"KD T={t:g}, beyond the grid": {"temperature": t} for t in BEYOND_THE_GRID},
    "DKD": {"soft_loss": "dkd"},
    "DIST": {"soft_loss": "dist"},
    "KD, standardised logits": {"logit_standardization": True},
    "auto (T)": {"temperature": "auto"},
    "auto (T, alpha, soft loss)": {"temperature": "auto", "alpha": "auto", "soft_loss": "auto"},
    "auto (T, learning rate)": {"temperature": "auto", "learning_rate": "auto"},
}
TRAINING_FIELDS = {"learning_rate"}  # a row's fields that belong to `training`, not `distillation`


def main() -> None:
    parser = argument_parser(__doc__, "logit_losses")
    parser.add_argument("--epochs", type=int, default=10, help="of each job (the request's default)")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument(
        "--seeds", nargs="*", type=int, default=[0, 1], help="training.seed of each row's jobs"
    )
    args = parser.parse_args()
    images, labels, test_images, test_labels = mnist_images(args.data)
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        folder = Path(tmp)
        with Timer() as teacher_clock:
            teacher = trained_two_conv_teacher(images, labels, epochs=args.teacher_epochs)
        with torch.no_grad():
            predictions = torch.cat([teacher(batch).argmax(1) for batch in test_images.split(1000)])
        teacher_errors = int((predictions != test_labels).sum())
        files = two_conv_job_files(folder, teacher, images, labels, test_images, test_labels)
        with service(args.url, args.api_key, folder / "home") as client:
            rows = distill_rows(client, files, args, test_images.numpy(), test_labels.numpy())
    result = {"benchmark": "logit_losses", "machine": machine(), "epochs": args.epochs,
              "teacher": {"test_errors": teacher_errors, "epochs": args.teacher_epochs,
                          "seconds": teacher_clock.seconds}, "rows": rows}  # fmt: skip
    add_gaps(result)
    write_result(args.out, result)
    report(result)


def distill_rows(client: ServiceClient, files: dict, args, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    teacher = client.upload(files["teacher"], "teacher")["id"]
    train = client.upload(files["train"], "dataset")["id"]
    rows = {}
    for name in args.rows:
        runs = [distill_row(client, name, seed, teacher, train, args, x_test, y_test) for seed in args.seeds]
        rows[name] = {"test_errors": float(np.mean([run["test_errors"] for run in runs])),
                      "distillation": ROWS[name], "seeds": runs}  # fmt: skip
    return rows


def distill_row(client: ServiceClient, name: str, seed: int, teacher: str, train: str, args, x_test, y_test):
    """One job of the row `name`, trained with `seed`: its student's test errors, time and search."""
    fields = ROWS[name]
    request = {
        "teacher": {"file_id": teacher, "format": "pt2"},
        "student": {"architecture": STUDENT.model_dump()},
        "dataset": {"train_file_id": train},
        "distillation": {k: v for k, v in fields.items() if k not in TRAINING_FIELDS},
        "training": {"epochs": args.epochs, "seed": seed}
        | {k: v for k, v in fields.items() if k in TRAINING_FIELDS},
        "export": [],
    }
    job = client.wait_for_success(client.submit(request)["id"], timeout=6 * 3600)
    predictions = exported_predictions(client.artifact(job["id"], "student.pt2"), x_test).numpy()
    run = {"seed": seed, "test_errors": int((predictions != y_test).sum()),
           "worker_seconds": round(job["finished_at"] - job["started_at"], 1),
           "search": job["metrics"].get("search")}  # fmt: skip
    print(f"{name}, seed {seed}: {run['test_errors']} test errors, {run['worker_seconds']} s", flush=True)
    return run


def add_gaps(result: dict) -> None:
    """Each distilled row's share of the gap from the student alone to the teacher that it closes."""
    rows, teacher = result["rows"], result["teacher"]["test_errors"]
    if "alone" not in rows:
        return
    alone = rows["alone"]["test_errors"]
    for name, row in rows.items():
        if name != "alone" and alone != teacher:
            row["gap_closed"] = round((alone - row["test_errors"]) / (alone - teacher), 3)


def report(result: dict) -> None:
    print(f"\nteacher: {result['teacher']['test_errors']} test errors; student {result['epochs']} epochs\n")
    print("| student | test errors (mean) | by seed | gap closed | seconds in the worker |")
    print("|---|---:|---|---:|---:|")
    for name, row in result["rows"].items():
        gap = f"{row['gap_closed']:.0%}" if "gap_closed" in row else "—"
        by_seed = ", ".join(str(run["test_errors"]) for run in row["seeds"])
        seconds = np.mean([run["worker_seconds"] for run in row["seeds"]])
        print(f"| {name} | {row['test_errors']:g} | {by_seed} | {gap} | {seconds:.0f} |")
    for name, row in result["rows"].items():
        for run in row["seeds"]:
            if search := run["search"]:
                chosen = {
                    field: search[field] for field in ("temperature", "alpha", "learning_rate", "soft_loss")
                }
                print(f"{name}, seed {run['seed']}: chose {chosen} after {len(search['trials'])} trials "
                      f"({search['spent_epochs']} epochs beyond the run); separated from the runner-up: "
                      f"{search['separated']} (p = {search['p_value']:.2g})")  # fmt: skip


if __name__ == "__main__":
    main()
