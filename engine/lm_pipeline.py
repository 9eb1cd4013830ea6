"""A causal language model's job, from files to artifacts: phase "validating" (`lm_preparation`), then the
student trained by the token-level losses (`train.lm_loop`), measured against the teacher on the validation
blocks, shown generating beside it, and exported as a transformers folder."""

from pathlib import Path

import torch
from torch import Tensor, nn

from engine.data.lm_text import IGNORE_INDEX, load_lm_tokenizer
from engine.evaluate import LiveTeacher, token_scores
from engine.export.latency import latency_ms, speedup
from engine.export.pretrained import export_pretrained
from engine.lm_preparation import LMSetup, prepare_language_model, with_cached_tokens
from engine.models.registry import count_parameters
from engine.plan.hf_models import PRETRAINED_ARTIFACT
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.results import DistillResult
from engine.runtime.compute import uncompile
from engine.runtime.distributed import Ranks
from engine.teachers.cache import CACHE_FOLDER, TeacherCacheStore
from engine.train.checkpoints import Checkpoints, QuietWhileReplaying
from engine.train.lm_loop import LANGUAGE_MODEL, build_lm_student
from engine.train.loop import Clock, start_run, steps_per_epoch, train_run

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
    student = build_lm_student(setup, job, reporter)
    reporter.phase("running")
    with ranks.main_first():
        setup = with_cached_tokens(setup)
    job_checkpoints = checkpoints.for_job(job, out_dir, reporter, saves=ranks.main)
    clock = Clock(
        reporter, job.training.epochs, steps_per_epoch(setup, job), job_checkpoints, ranks, deadline
    )
    training_reporter = QuietWhileReplaying(reporter, job_checkpoints)
    run = start_run(setup, [student], job)
    series = train_run(setup, run, job, training_reporter, clock, task=LANGUAGE_MODEL)
    if not ranks.main:
        return None
    model = student.model
    uncompile(model)
    metrics = lm_metrics(setup, model, job.training.batch_size)
    metrics["samples"] = sample_generations(setup, model, reporter)
    artifacts = {PRETRAINED_ARTIFACT: export_pretrained(model, student.spec, setup.tokenizer_folder, out_dir)}
    student_scores, teacher_scores = metrics["student"], metrics["teacher"]
    headline = (
        f"student validation perplexity {student_scores['perplexity']:.3f} (the teacher's "
        f"{teacher_scores['perplexity']:.3f}), top-1 agreement {metrics['agreement']:.2%}, "
        f"{metrics['compression']:.1f}x fewer parameters"
    )
    return DistillResult(metrics, series, artifacts, headline)


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
    events and the metrics."""
    tokenizer = load_lm_tokenizer(setup.tokenizer_folder)
    samples = []
    student.eval()  # for good: it is exported next
    for block in range(min(SAMPLES, len(setup.validation))):
        prompt = prompt_ids(setup.validation.ids[block], setup.validation.labels[block])
        texts = {
            who: tokenizer.decode(greedy(model, prompt, setup.device), skip_special_tokens=True)
            for who, model in (("teacher", setup.teacher), ("student", student))
        }
        samples.append({"prompt": tokenizer.decode(prompt, skip_special_tokens=True)} | texts)
        reporter.event(
            f"Sample {block + 1}: {samples[-1]['prompt']!r} -> teacher {texts['teacher']!r}; "
            f"student {texts['student']!r}"
        )
    return samples


def prompt_ids(ids: Tensor, labels: Tensor) -> Tensor:
    """A block's prompt: the tokens before its first learnt one (a prompt's, or a conversation's before the
    assistant's turn), else, for plain text, its first PROMPT_TOKENS."""
    learnt = (labels != IGNORE_INDEX).nonzero()
    first = int(learnt[0]) + 1 if len(learnt) else len(ids)
    return ids[: first if first > 1 else PROMPT_TOKENS]


def greedy(model: nn.Module, prompt: Tensor, device: torch.device) -> Tensor:
    """The model's NEW_TOKENS most likely next tokens after `prompt`, one at a time (greedy decoding)."""
    language_model = model.model
    ids = prompt.unsqueeze(0).to(device)
    config = language_model.generation_config
    generated = language_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=config.pad_token_id if config.pad_token_id is not None else config.eos_token_id,
    )
    return generated[0, len(prompt) :].cpu()
