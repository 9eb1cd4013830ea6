"""A distillation job from files to artifacts.

Phase "validating" checks everything that can fail cheaply (the job's rules, files, shapes, labels, the
teachers on real batches, the feature layers) so a job fails in seconds with an actionable error, not
after hours. Phase "running" trains the students its method asks for, then exports the best one.
"""

import json
import shutil
import time
import traceback
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.data.hf_text import with_tokenizer_ids
from engine.evaluate import accuracy, classification_metrics, evaluating, final_metrics, predict
from engine.export.latency import latency_ms, speedup
from engine.export.onnx_model import INT8_ONNX_MODEL, ONNX_MODEL, export_onnx, onnx_metrics, quantize_onnx
from engine.export.pretrained import export_pretrained
from engine.export.pt2 import PROGRAM, export_student
from engine.export.quantize import INT8_PROGRAM, export_int8, quantize_int8
from engine.lm_pipeline import distill_language_model
from engine.models.registry import count_parameters
from engine.plan.errors import JobFailed
from engine.plan.hf_models import PRETRAINED_ARTIFACT
from engine.plan.specs import EngineJob, HFSpec, JobFiles, is_causal_lm
from engine.preparation import Setup, prepare, with_cached_outputs
from engine.reporting import Reporter
from engine.results import DistillResult
from engine.runtime.compute import uncompile
from engine.runtime.devices import resolve_device
from engine.runtime.distributed import ONE_PROCESS, Ranks
from engine.runtime.memory import peak_memory, reset_peak_memory
from engine.teachers.cache import CACHE_FOLDER, TeacherCacheStore
from engine.train.checkpoints import Checkpoints
from engine.train.methods import Candidate, Trained, train_students
from engine.train.search import first_trial
from engine.train.students import build_student

METRICS_FILE = "metrics.json"

__all__ = ["Checkpoints", "DistillResult", "JobFiles", "Reporter", "TeacherCacheStore", "run_distillation"]


def run_distillation(
    job: EngineJob,
    files: JobFiles,
    out_dir: Path,
    reporter: Reporter,
    checkpoints: Checkpoints | None = None,
    teacher_cache: TeacherCacheStore | None = None,
    ranks: Ranks = ONE_PROCESS,
    deadline: float | None = None,
) -> DistillResult | None:
    """Distill `job` from its `files` into `out_dir`, telling `reporter` how it goes. `checkpoints`: where
    and how often to save the training state, and the last attempt's to resume from (default: none saved).
    `teacher_cache`: where the teachers' outputs are kept for later jobs (default: for this job only).
    `ranks`: this process's place among those training the job together (see `engine.runtime.distributed`;
    each has an `out_dir` of its own); only rank 0 evaluates and exports the student, the others return
    None. `deadline`: a `time.time()` past which training stops, saves its checkpoint and fails the job
    `time_limit_exceeded` (default: none)."""
    started = time.perf_counter()
    device = torch.device("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        reporter.phase("validating")
        job = with_tokenizer_ids(job, files)
        device = ranks.device or resolve_device(job.training.device)
        reset_peak_memory(device)
        checkpoints = checkpoints or Checkpoints()
        distill = distill_language_model if is_causal_lm(job.student_architecture) else distill_classifier
        result = distill(
            job,
            files,
            out_dir,
            reporter,
            device=device,
            checkpoints=checkpoints,
            teacher_cache=teacher_cache,
            ranks=ranks,
            deadline=deadline,
        )
        return None if result is None else written(result, device, out_dir, started, reporter)
    except BaseException as error:
        # The traceback's frames would keep the models and batches (GPU memory) alive.
        traceback.clear_frames(error.__traceback__)
        if is_out_of_memory(error):
            raise out_of_memory(error, device) from None
        raise
    finally:
        shutil.rmtree(out_dir / CACHE_FOLDER, ignore_errors=True)  # what the store keeps, it has copied
        if device.type == "cuda":
            torch.cuda.empty_cache()


def distill_classifier(
    job: EngineJob,
    files: JobFiles,
    out_dir: Path,
    reporter: Reporter,
    *,
    device: torch.device,
    checkpoints: Checkpoints,
    teacher_cache: TeacherCacheStore | None,
    ranks: Ranks,
    deadline: float | None,
) -> DistillResult | None:
    """Train, choose and export the student of a classifier's job."""
    with ranks.main_first():
        setup = prepare(job, files, device, reporter, out_dir / CACHE_FOLDER, teacher_cache, ranks)
    spec, seed = job.student_architecture, job.training.seed
    student = build_student(setup, first_trial(job), spec, seed, reporter)
    reporter.phase("running")
    with ranks.main_first():
        setup = with_cached_outputs(setup)
    job_checkpoints = checkpoints.for_job(job, out_dir, reporter, saves=ranks.main)
    trained = train_students(setup, job, student, job_checkpoints, reporter, deadline)
    return finish(setup, trained, out_dir, reporter) if ranks.main else None


def written(
    result: DistillResult, device: torch.device, out_dir: Path, started: float, reporter: Reporter
) -> DistillResult:
    """The result with its peak memory and its metrics file written, and the event that ends the job."""
    seconds = time.perf_counter() - started
    result.metrics["peak_memory"] = peak_memory(device)
    summary = {"final": result.metrics, "series": result.series, "device": str(device), "seconds": seconds}
    result.artifacts[METRICS_FILE] = out_dir / METRICS_FILE
    result.artifacts[METRICS_FILE].write_text(json.dumps(summary, indent=2) + "\n")
    reporter.event(f"Finished in {seconds:.1f} s: {result.headline}; exported {', '.join(result.artifacts)}")
    return result


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's and the CPU allocator's failures (the latter a plain RuntimeError), and Python's."""
    allocator = isinstance(error, RuntimeError) and "DefaultCPUAllocator" in str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or allocator


def out_of_memory(error: BaseException, device: torch.device) -> JobFailed:
    reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return JobFailed(
        "out_of_memory",
        f"the job ran out of memory on {device} ({reason}): lower training.batch_size or use smaller models; "
        "the server bounds what a job may ask with DISTILL_MAX_JOB_MEMORY_BYTES",
    )


def finish(setup: Setup, trained: Trained, out_dir: Path, reporter: Reporter) -> DistillResult:
    """Export the best candidate on the validation set, and measure it."""
    job, batch_size = trained.job, trained.job.training.batch_size
    scored = [
        (c, predict(c.student.model, setup.validation.x, batch_size, setup.device))
        for c in trained.candidates
    ]
    best, student_logits = max(scored, key=lambda pair: candidate_score(setup, pair[1]))
    metrics = job_metrics(setup, trained, scored, best)
    if len(scored) > 1:
        reporter.event(f"Best on the validation set: {best.name}; it is the exported student")
    best.student.taps.remove()  # the exported student must carry no hooks
    student, example = best.student.model, setup.train.x[:1]
    uncompile(student)  # exported, timed and deployed as the plain model
    artifacts = export_student(student, best.student.spec, example, out_dir)
    if isinstance(best.student.spec, HFSpec):
        artifacts[PRETRAINED_ARTIFACT] = export_pretrained(
            student, best.student.spec, setup.tokenizer_folder, out_dir
        )
    if "int8" in job.export:
        artifacts[INT8_PROGRAM] = export_int8(student, example, out_dir)
        metrics["int8"] = int8_metrics(setup, student, student_logits, artifacts, batch_size)
    if "onnx" in job.export:
        metrics["onnx"] = onnx_exports(setup, job, artifacts, student_logits, out_dir)
    add_latencies(setup, student, metrics)
    headline = (
        f"student agreement with the teacher {metrics['agreement']:.2%}, {metrics['compression']:.1f}x fewer "
        "parameters"
    )
    return DistillResult(metrics, trained.series, artifacts, headline)


def job_metrics(
    setup: Setup, trained: Trained, scored: list[tuple[Candidate, Tensor]], best: Candidate
) -> dict:
    """The best candidate's `final_metrics`; with several candidates, each one's summary too; the search."""
    logits = next(logits for candidate, logits in scored if candidate is best)
    metrics = final_metrics(
        setup.teacher_validation_logits,
        logits,
        setup.validation.y,
        teacher_parameters=setup.teachers.parameter_count(),
        student_parameters=count_parameters(best.student.model),
    )
    if len(scored) > 1:
        group = "generations" if trained.job.distillation.method == "born_again" else "students"
        metrics[group] = [candidate_summary(setup, c, logits, c is best) for c, logits in scored]
    if trained.search is not None:
        metrics["search"] = trained.search
    metrics["teacher_cache"] = setup.cache.summary()
    return metrics


def candidate_score(setup: Setup, logits: Tensor) -> float:
    """Validation accuracy, or agreement with the teacher where there are no labels."""
    if setup.validation.labeled:
        return accuracy(logits, setup.validation.y)
    return accuracy(logits, setup.teacher_validation_logits.argmax(dim=1))


def candidate_summary(setup: Setup, candidate: Candidate, logits: Tensor, exported: bool) -> dict:
    scores = classification_metrics(setup.teacher_validation_logits, logits, setup.validation.y)
    return {
        "name": candidate.name,
        "family": candidate.student.spec.family,
        "parameters": count_parameters(candidate.student.model),
        "accuracy": scores["student_accuracy"],
        "agreement": scores["agreement"],
        "exported": exported,
    }


def onnx_exports(
    setup: Setup, job: EngineJob, artifacts: dict[str, Path], student_logits: Tensor, out_dir: Path
) -> dict:
    """`student.onnx` from the saved `student.pt2` (and `student.int8.onnx` with int8), each run with
    ONNX Runtime on the validation set against the PyTorch student."""
    path = artifacts[ONNX_MODEL] = export_onnx(torch.export.load(artifacts[PROGRAM]), out_dir)
    x, labels, batch_size = setup.validation.x.cpu(), setup.validation.y, job.training.batch_size
    measured = onnx_metrics(path, x, labels, student_logits, batch_size)
    if "int8" in job.export:
        artifacts[INT8_ONNX_MODEL] = quantize_onnx(path)
        measured["int8"] = onnx_metrics(artifacts[INT8_ONNX_MODEL], x, labels, student_logits, batch_size)
    return measured


def add_latencies(setup: Setup, student: nn.Module, metrics: dict) -> None:
    """The teachers' and the student's `latency_ms` (per sample, at batch 1 and 64, on the job's device)
    in their metrics, and the student's `speedup` over the teachers; `int8_metrics` times the int8 one."""
    sample, device = setup.validation.x[:1], setup.device

    def teachers(x: Tensor) -> list[Tensor]:
        return [teacher(x) for teacher in setup.teachers.teachers]

    metrics["teacher"]["latency_ms"] = latency_ms(teachers, sample, device)
    with evaluating(student):
        metrics["student"]["latency_ms"] = latency_ms(student, sample, device)
    metrics["speedup"] = speedup(metrics["teacher"]["latency_ms"], metrics["student"]["latency_ms"])
    metrics["latency_device"] = str(device)


def int8_metrics(
    setup: Setup, student: nn.Module, student_logits: Tensor, artifacts: dict[str, Path], batch_size: int
) -> dict:
    """The int8 student measured on the validation set like the float one, its latency, and both files'
    sizes."""
    int8_student = quantize_int8(student)
    int8_logits = predict(int8_student, setup.validation.x, batch_size, setup.device)
    labels = setup.validation.y
    return {
        "accuracy": None if labels is None else accuracy(int8_logits, labels),
        "agreement": accuracy(int8_logits, student_logits.argmax(dim=1)),
        "bytes": artifacts[INT8_PROGRAM].stat().st_size,
        "float_bytes": artifacts[PROGRAM].stat().st_size,
        "latency_ms": latency_ms(int8_student, setup.validation.x[:1], setup.device),
    }
