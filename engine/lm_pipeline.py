"""A causal language model's job, from files to artifacts: phase "validating" (`lm_preparation`, and with
sequence-level KD the teacher's completions of the training prompts, `train.sequence_level`), then the student
trained by the token-level losses (`train.lm_loop`), measured against the teacher on the validation blocks,
shown generating beside it, and exported as a transformers folder."""

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.data.lm_text import load_lm_tokenizer
from engine.evaluate import LiveTeacher, token_scores
from engine.export.latency import latency_ms, speedup
from engine.export.onnx_language_model import export_language_model_onnx, language_model_onnx_metrics
from engine.export.onnx_model import ONNX_MODEL
from engine.export.pretrained import export_adapter, export_pretrained
from engine.lm_preparation import LMSetup, prepare_language_model, with_cached_tokens
from engine.models.hf.lora import merge_lora
from engine.models.registry import count_parameters
from engine.plan.errors import JobFailed
from engine.plan.hf_models import LORA_ARTIFACT, PRETRAINED_ARTIFACT
from engine.plan.lora_adapters import ADAPTER_BASES
from engine.plan.sizes import planned_epochs
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.results import DistillResult
from engine.runtime.compute import uncompile
from engine.runtime.distributed import Ranks
from engine.teachers.cache import CACHE_FOLDER, TeacherCacheStore
from engine.train.checkpoints import Checkpoints, QuietWhileReplaying
from engine.train.generation import block_prompts
from engine.train.lm_loop import LANGUAGE_MODEL, build_lm_student
from engine.train.loop import Clock, start_run, steps_per_epoch, train_run
from engine.train.sequence_level import GENERATIONS_ARTIFACT, with_teacher_generations
from engine.train.students import Student

SAMPLES = 3  # generations shown at the end, from the first validation blocks
PROMPT_TOKENS = 16  # of a block with no prompt of its own (plain text)
NEW_TOKENS = 24


def distill_language_model(
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
    """Train and export the student of a causal language model's job (see `pipeline.run_distillation`)."""
    with ranks.main_first():
        setup = prepare_language_model(
            job, files, device, reporter, ranks, folder=out_dir / CACHE_FOLDER, cache_store=teacher_cache
        )
    job_checkpoints = checkpoints.for_job(job, out_dir, reporter, saves=ranks.main)
    generations, uploaded = None, setup
    if job.distillation.sequence_level is not None:
        setup, generations = with_teacher_generations(
            setup, job, out_dir, reporter, deadline, checkpoints=job_checkpoints
        )
    student = build_lm_student(setup, job, reporter)
    reporter.phase("running")
    with ranks.main_first():
        setup = with_cached_tokens(setup, job)
    data = setup if generations is None else uploaded  # the data as it was uploaded, for the reference
    epochs, epoch_steps = planned_epochs(job), steps_per_epoch(setup, job)
    clock = Clock(reporter, epochs, epoch_steps, job_checkpoints, ranks, deadline)
    training_reporter = QuietWhileReplaying(reporter, job_checkpoints)
    series = train_run(
        setup, start_run(setup, [student], job), job, training_reporter, clock, task=LANGUAGE_MODEL
    )
    student.taps.remove()  # the paired layers are read no more: not by the export, nor by the samples
    setup.teacher_taps.remove()
    alone = None
    if job.distillation.alone_reference:
        alone, alone_series = trained_alone(data, job, training_reporter, clock)
        series += alone_series
    if not ranks.main:
        return None
    model = student.model
    uncompile(model)
    artifacts: dict[str, Path] = {}
    lora = {} if student.lora is None else {"lora": merged_lora(setup, student, out_dir, artifacts, reporter)}
    metrics = lm_metrics(setup, model, job.training.batch_size) | lora
    if alone is not None:
        metrics |= alone_metrics(setup, alone, metrics, job.training.batch_size)
    metrics["samples"] = sample_generations(setup, model, reporter)
    artifacts[PRETRAINED_ARTIFACT] = export_pretrained(model, student.spec, setup.tokenizer_folder, out_dir)
    if generations is not None:
        artifacts[GENERATIONS_ARTIFACT] = generations
    if "onnx" in job.export:
        metrics["onnx"] = onnx_export(setup, model, student.spec.max_length, out_dir, artifacts, reporter)
    student_scores, teacher_scores = metrics["student"], metrics["teacher"]
    headline = (
        f"student validation perplexity {student_scores['perplexity']:.3f} (the teacher's "
        f"{teacher_scores['perplexity']:.3f}), top-1 agreement {metrics['agreement']:.2%}, "
        f"{metrics['compression']:.1f}x fewer parameters"
    )
    if alone is not None:
        closed = "none" if metrics["gap_closed"] is None else f"{metrics['gap_closed']:.0%}"
        headline += (
            f"; trained alone it reaches {metrics['alone']['perplexity']:.3f}: distillation closed {closed} "
            "of the gap to the teacher"
        )
    return DistillResult(metrics, series, artifacts, headline)


def trained_alone(
    setup: LMSetup, job: EngineJob, reporter: Reporter, clock: Clock
) -> tuple[nn.Module, list[dict]]:
    """The same student, from the same start, trained on the data as uploaded (`setup`) by the next-token
    cross-entropy alone: the run named `alone`."""
    distillation = job.distillation.model_copy(
        update={"alpha": 0.0, "beta": 1.0, "on_policy": None, "features": [], "alone_reference": False}
    )
    alone_job = job.model_copy(update={"distillation": distillation})
    reporter.event("Training the reference: the same student on the next-token cross-entropy alone")
    student = build_lm_student(setup, alone_job, reporter)
    run = start_run(setup, [student], alone_job)
    series = train_run(setup, run, alone_job, reporter, clock, name="alone", task=LANGUAGE_MODEL)
    return student.model, series


def alone_metrics(setup: LMSetup, alone: nn.Module, metrics: dict, batch_size: int) -> dict:
    """`alone`: the reference's perplexity and accuracy; `gap_closed`: (alone - student) / (alone - teacher)
    perplexity, None where the reference is as good as the teacher."""
    scores = token_scores(alone, LiveTeacher(setup.teacher), setup.validation, batch_size, setup.device)
    reference, student, teacher = scores["perplexity"], metrics["student"], metrics["teacher"]
    gap = reference - teacher["perplexity"]
    return {
        "alone": {"perplexity": reference, "accuracy": scores["accuracy"]},
        "gap_closed": (reference - student["perplexity"]) / gap if gap > 0 else None,
    }


@torch.no_grad()
def merged_lora(setup: LMSetup, student: Student, out_dir: Path, artifacts: dict, reporter: Reporter) -> dict:
    """A LoRA student's adapter saved apart (`student.lora.zip`), then merged into its weights, which are
    plain transformers ones from then on; the adapters' figures, and the largest difference the merge made
    to the logits of the first validation blocks (rounding)."""
    artifacts[LORA_ARTIFACT] = export_adapter(student.lora, out_dir)
    model, blocks = student.model.eval(), setup.validation.ids[:SAMPLES].to(setup.device)
    logits = logits_of(model)
    before = logits(blocks)
    merge_lora(student.lora)
    difference = float((logits(blocks) - before).abs().max())
    reporter.event(
        f"LoRA adapters merged into the student's weights (student.hf.zip; logits within {difference:.2g} of "
        f"the adapted model's). The adapter alone (student.lora.zip) applies to "
        f"{ADAPTER_BASES[student.lora.figures['base']]}"
    )
    return student.lora.figures | {"merge_max_abs_difference": difference}


def onnx_export(
    setup: LMSetup, model: nn.Module, max_length: int, out_dir: Path, artifacts: dict, reporter: Reporter
) -> dict | None:
    """`student.onnx` checked with ONNX Runtime against the student; where the exporter fails on the model,
    an event says why and the job goes on without it (None)."""
    language_model = copy.deepcopy(model.model).to("cpu").eval()
    try:
        path = export_language_model_onnx(language_model, max_length, out_dir)
    except JobFailed as failed:
        reporter.event(
            f"No student.onnx: {failed.message}; the transformers folder is the student", "warning"
        )
        return None
    artifacts[ONNX_MODEL] = path
    return language_model_onnx_metrics(path, language_model, setup.validation)


def lm_metrics(setup: LMSetup, student: nn.Module, batch_size: int) -> dict:
    """The job's headline result: both models' perplexity, next-token accuracy, size and latency; how close
    the student came to the teacher, over the whole vocabulary whatever the top_k; the teacher cache's use."""
    scores = token_scores(student, LiveTeacher(setup.teacher), setup.validation, batch_size, setup.device)
    teacher = setup.teacher_scores
    sizes = {"teacher": count_parameters(setup.teacher), "student": count_parameters(student)}
    sample = setup.validation.ids[:1]
    latencies = {
        who: latency_ms(logits_of(model), sample, setup.device)
        for who, model in (("teacher", setup.teacher), ("student", student))
    }
    return {
        "task": "causal-lm",
        "teacher": {"perplexity": teacher["perplexity"], "accuracy": teacher["accuracy"]}
        | {"parameters": sizes["teacher"], "latency_ms": latencies["teacher"]},
        "student": {"perplexity": scores["perplexity"], "accuracy": scores["accuracy"]}
        | {"parameters": sizes["student"], "latency_ms": latencies["student"]},
        "agreement": scores["agreement"],
        "kl_to_teacher": scores["kl_to_teacher"],
        "accuracy_retention": scores["accuracy"] / teacher["accuracy"] if teacher["accuracy"] > 0 else None,
        "compression": sizes["teacher"] / sizes["student"],
        "speedup": speedup(latencies["teacher"], latencies["student"]),
        "latency_device": str(setup.device),
        "tokens": scores["tokens"],
        "teacher_cache": setup.cache.summary(),
    }


def logits_of(model: nn.Module):
    """The wrapped model's whole forward pass, its next-token logits at every position included, as it runs
    deployed."""
    language_model = model.model

    def run(ids: Tensor) -> Tensor:
        return language_model(input_ids=ids, use_cache=False).logits

    return run


@torch.no_grad()
def sample_generations(setup: LMSetup, student: nn.Module, reporter: Reporter) -> list[dict]:
    """The teacher's and the student's greedy continuations of the first validation blocks' prompts, in the
    events and the metrics: each prompt as text, encoded and its continuation decoded as transformers'
    `pipeline("text-generation")` does, so that the student folder writes the same there."""
    tokenizer = load_lm_tokenizer(setup.tokenizer_folder)
    samples = []
    student.eval()  # for good: it is exported next
    prompts = block_prompts(setup.validation.subset(slice(SAMPLES)), PROMPT_TOKENS)
    for block, prompt_tokens in enumerate(prompts):
        prompt = tokenizer.decode(prompt_tokens, skip_special_tokens=True)
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        texts = {
            who: continuation(tokenizer, ids, greedy(model, ids, setup.device))
            for who, model in (("teacher", setup.teacher), ("student", student))
        }
        samples.append({"prompt": prompt} | texts)
        reporter.event(
            f"Sample {block + 1}: {prompt!r} -> teacher {texts['teacher']!r}; student {texts['student']!r}"
        )
    return samples


def greedy(model: nn.Module, ids: Tensor, device: torch.device) -> Tensor:
    """The prompt `ids` [1, L] and the model's NEW_TOKENS most likely next tokens after it, one at a time."""
    language_model = model.model
    config = language_model.generation_config
    ids = ids.to(device)
    return language_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=config.pad_token_id if config.pad_token_id is not None else config.eos_token_id,
    )[0].cpu()


def continuation(tokenizer, prompt: Tensor, generated: Tensor) -> str:
    """The text after the prompt's, as the pipeline cuts it: the whole sequence decoded, less the prompt's
    decoded length (a byte-level token split between the two decodes whole)."""
    prompt_length = len(tokenizer.decode(prompt[0], skip_special_tokens=True))
    return tokenizer.decode(generated, skip_special_tokens=True)[prompt_length:]
