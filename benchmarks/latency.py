"""How much faster the student is: a job's latency figures, through the engine, on this machine.

MNIST's 784-1200-1200-10 teacher (one epoch of plain PyTorch) into a 784-128-10 student (2 epochs),
`export: ["onnx", "int8"]`: milliseconds per sample at batch 1 and 64 of the teacher, the student and the
int8 student (PyTorch, on the job's device), the speed-up, and `student.onnx` and `student.int8.onnx`
under ONNX Runtime on the CPU (accuracy, agreement, latency).

    .venv/bin/python -m benchmarks.latency [--data ../shared/datasets/mnist]
"""

import tempfile
from pathlib import Path

from benchmarks.common import MNIST_TEACHER, argument_parser, machine, mnist_teacher_files, write_result
from engine.pipeline import JobFiles, run_distillation
from engine.plan.specs import EngineJob
from tests.engine.factories import RecordingReporter

STUDENT = {"family": "mlp", "input_shape": [784], "num_classes": 10, "hidden_sizes": [128]}
FIGURES = ("teacher", "student", "int8", "speedup", "latency_device", "compression", "onnx")


def main() -> None:
    args = argument_parser(__doc__, "latency").parse_args()
    job = EngineJob.model_validate({
        "teachers": [{"format": "safetensors", "architecture": MNIST_TEACHER}],
        "student_architecture": STUDENT,
        "training": {"epochs": 2, "batch_size": 128, "device": "cpu"},
        "export": ["onnx", "int8"],
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        files = mnist_teacher_files(Path(folder), args.data)
        job_files = JobFiles([files["teacher"]], files["train"], files["validation"])
        metrics = run_distillation(job, job_files, Path(folder) / "out", RecordingReporter()).metrics
    result = {"benchmark": "latency", "machine": machine(), **{name: metrics[name] for name in FIGURES}}
    models = {"teacher": metrics["teacher"], "student": metrics["student"], "int8": metrics["int8"],
              "student.onnx": metrics["onnx"], "student.int8.onnx": metrics["onnx"]["int8"]}  # fmt: skip
    for name, model in models.items():
        latency = model["latency_ms"]
        print(f"{name:<18} accuracy {model['accuracy']:.2%}  ms per sample: "
              f"batch 1 {latency['batch_1']:.4f}, batch 64 {latency['batch_64']:.4f}")  # fmt: skip
    print(f"speed-up: {metrics['speedup']['batch_1']}x at batch 1, {metrics['speedup']['batch_64']}x at 64")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
