"""Every distillation method with transformers (`hf`) teachers and students, in the engine: the teachers are
`save_pretrained` folders written here (BERTs fine-tuned on texts with label names, a ViT on coloured images),
the students transformers configs resolved as the service resolves them; one epoch of a few dozen samples
each. The student's folder (`student.hf.zip`) runs in transformers' own pipeline."""

import json
import math
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import AutoTokenizer, pipeline

from engine.pipeline import JobFiles, run_distillation
from engine.plan.hf_design import student_from_config
from engine.plan.hf_inputs import folder_spec
from engine.plan.specs import EngineJob, HFSpec
from engine.runtime.distributed import SilentReporter, join_ranks, leave_ranks
from tests.engine.factories import FolderCacheStore, RecordingReporter, series
from tests.engine.hf_factories import CONFIGS
from tests.engine.runtime.test_distributed import free_port
from tests.engine.teachers.test_cache import assert_same_student, without_cache
from tests.hf_image_factories import (
    COLOURS,
    coloured_images,
    pil_image,
    vit_teacher_folder,
    write_image_npz,
    write_image_parquet,
)
from tests.hf_text_factories import (
    SENTENCES,
    bert_tokenizer_folder,
    dog_texts,
    fine_tuned_bert_folder,
    write_jsonl,
)

MAX_LENGTH = 16
BATCH_SIZE = 16
TEXT_STUDENT = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "max_length": MAX_LENGTH}  # fmt: skip
TEXT_PEER = TEXT_STUDENT | {"hidden_size": 4, "intermediate_size": 8}
# The teachers' last layer and the student's one: [N, L, 16] and [N, L, 8], a linear map per token between.
LAYER_PAIR = {"teacher": "model.bert.encoder.layer.1", "student": "model.bert.encoder.layer.0"}


def spec_of(folder: Path) -> HFSpec:
    """The teacher's spec as the service reads it from the folder."""

    def document(name: str) -> dict | None:
        path = folder / name
        return json.loads(path.read_text()) if path.exists() else None

    return folder_spec(
        document("config.json"),
        preprocessor=document("preprocessor_config.json"),
        tokenizer_config=document("tokenizer_config.json"),
    )


def distill(job: EngineJob, files: JobFiles, out_dir: Path, store=None):
    reporter = RecordingReporter()
    return run_distillation(job, files, out_dir, reporter, teacher_cache=store), reporter


def make_job(teachers: list[HFSpec], student: HFSpec, **sections) -> EngineJob:
    fields = {
        "teachers": [{"format": "hf", "architecture": spec} for spec in teachers],
        "student_architecture": student,
        "distillation": {"temperature": 2.0, "alpha": 0.5, "beta": 0.5},
        "training": {"epochs": 1, "batch_size": BATCH_SIZE, "learning_rate": 3e-3, "device": "cpu"},
    }
    for name, values in sections.items():
        fields[name] = fields.get(name, {}) | values if isinstance(values, dict) else values
    return EngineJob.model_validate(fields)


def unpacked(result, out_dir: Path) -> Path:
    """The student's `save_pretrained` folder, from the job's student.hf.zip."""
    with zipfile.ZipFile(result.artifacts["student.hf.zip"]) as archive:
        archive.extractall(out_dir)
    return out_dir


# Text ------------------------------------------------------------------------------------------------


@dataclass
class TextTask:
    teacher: Path  # BERT 16 wide
    narrow_teacher: Path  # BERT 8 wide, with the same tokenizer
    train: Path
    validation: Path

    def job(self, *, teachers: int = 1, **sections) -> EngineJob:
        specs = [spec_of(folder) for folder in self.teachers(teachers)]
        return make_job(specs, student_from_config(specs[0], TEXT_STUDENT), **sections)

    def files(self, teachers: int = 1) -> JobFiles:
        return JobFiles(self.teachers(teachers), self.train, self.validation)

    def teachers(self, count: int) -> list[Path]:
        return [self.teacher, self.narrow_teacher][:count]

    def peer(self) -> HFSpec:
        """A BERT narrower than the student, resolved as the service resolves an hf peer."""
        return student_from_config(spec_of(self.teacher), TEXT_PEER)


@pytest.fixture(scope="module")
def text_task(tmp_path_factory) -> TextTask:
    directory = tmp_path_factory.mktemp("text")
    texts, labels = dog_texts(48, seed=0)
    teacher = fine_tuned_bert_folder(directory / "teacher", texts, labels, hidden_size=16)
    narrow = fine_tuned_bert_folder(
        directory / "narrow", texts, labels, hidden_size=8, tokenizer=teacher, seed=1
    )
    return TextTask(
        teacher=teacher,
        narrow_teacher=narrow,
        train=write_jsonl(directory / "train.jsonl", texts, labels),
        validation=write_jsonl(directory / "validation.jsonl", *dog_texts(16, seed=1)),
    )


def test_hinton_kd_weighs_the_soft_and_hard_losses_and_exports_the_students_folder(text_task, tmp_path):
    job = text_task.job(distillation={"temperature": 3.0, "alpha": 0.7, "beta": 0.3})
    result, reporter = distill(job, text_task.files(), tmp_path / "out")
    assert result.metrics["teacher"]["accuracy"] == 1.0
    values = reporter.metric_calls[0][2]
    assert values["loss"] == pytest.approx(0.7 * values["soft_loss"] + 0.3 * values["hard_loss"], rel=1e-5)
    folder = unpacked(result, tmp_path / "student")
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "plain", "1": "dog"}
    names = load_file(folder / "model.safetensors").keys()
    assert "classifier.weight" in names and not any(name.startswith("model.") for name in names)  # unwrapped


def test_loading_and_saving_hf_models_draws_no_progress_bars(text_task, tmp_path, capfd):
    distill(text_task.job(), text_task.files(), tmp_path / "out")
    output = capfd.readouterr()
    assert "Loading weights" not in output.err + output.out
    assert "Writing model shards" not in output.err + output.out


@pytest.mark.parametrize(
    "distillation",
    [{"soft_loss": "dkd"}, {"soft_loss": "dist"}, {"soft_loss": "kl", "logit_standardization": True}],
    ids=["dkd", "dist", "logit standardization"],
)
def test_every_soft_loss_teaches_an_hf_student(text_task, tmp_path, distillation):
    result, reporter = distill(text_task.job(distillation=distillation), text_task.files(), tmp_path / "out")
    values = reporter.metric_calls[0][2]
    assert math.isfinite(values["soft_loss"]) and values["soft_loss"] > 0
    assert values["loss"] == pytest.approx(0.5 * values["soft_loss"] + 0.5 * values["hard_loss"], rel=1e-5)
    assert "student.hf.zip" in result.artifacts


def test_an_auto_temperature_is_searched_with_hf_models(text_task, tmp_path):
    search = {"temperatures": [1.0, 4.0], "budget_epochs": 2}
    job = text_task.job(distillation={"temperature": "auto", "search": search})
    result, _ = distill(job, text_task.files(), tmp_path / "out")
    record = result.metrics["search"]
    assert sorted(trial["temperature"] for trial in record["trials"]) == [1.0, 4.0]
    assert record["temperature"] in (1.0, 4.0)


# The cache must give the student the teachers would, whatever reads the teachers' outputs.
CACHED_JOBS = {
    "plain KD": lambda task: task.job(),
    "feature pairs on hf layers": lambda task: task.job(distillation={"features": [LAYER_PAIR]}),
    "two BERTs of different widths": lambda task: task.job(teachers=2),
    "mutual learning with an hf peer": lambda task: task.job(
        distillation={"method": "mutual", "peers": [task.peer()]}
    ),
    "born-again": lambda task: task.job(distillation={"method": "born_again", "generations": 2}),
}


@pytest.fixture(scope="module")
def cached_and_not(text_task, tmp_path_factory):
    """name -> ((result, reporter) with the cache, result without) of the CACHED_JOBS job, each run once."""
    runs = {}

    def run(name: str):
        if name not in runs:
            job = CACHED_JOBS[name](text_task)
            files, out = text_task.files(len(job.teachers)), tmp_path_factory.mktemp("cached")
            runs[name] = (
                distill(job, files, out / "cached"),
                distill(without_cache(job), files, out / "uncached")[0],
            )
        return runs[name]

    return run


@pytest.mark.parametrize("name", CACHED_JOBS)
def test_the_cache_gives_the_very_student_the_hf_teachers_would(cached_and_not, name):
    (cached, _), uncached = cached_and_not(name)
    assert cached.metrics["teacher_cache"]["status"] == "miss"
    assert_same_student(cached, uncached)


def test_feature_pairs_read_hf_layers_by_module_path(cached_and_not):
    (result, reporter), _ = cached_and_not("feature pairs on hf layers")
    values = reporter.metric_calls[0][2]
    assert values["feature_loss"] > 0
    weighted = 0.5 * values["soft_loss"] + 0.5 * values["hard_loss"] + values["feature_loss"]
    assert values["loss"] == pytest.approx(weighted, rel=1e-5)
    # The projection trains with the student and is no part of it.
    plain = cached_and_not("plain KD")[1]
    assert result.metrics["student"]["parameters"] == plain.metrics["student"]["parameters"]


def test_two_bert_teachers_of_different_widths_teach_one_student(cached_and_not, text_task):
    (result, reporter), _ = cached_and_not("two BERTs of different widths")
    messages = [message for _, message in reporter.events]
    assert any(m.startswith("Teacher 2 of 2 loaded (hf)") for m in messages)
    assert any(m.startswith("Teacher ensemble validation accuracy") for m in messages)
    one = cached_and_not("plain KD")[1].metrics["teacher"]["parameters"]
    assert one < result.metrics["teacher"]["parameters"] < 2 * one


def test_mutual_learning_trains_an_hf_peer_beside_the_student(cached_and_not):
    (result, _), _ = cached_and_not("mutual learning with an hf peer")
    students = result.metrics["students"]
    assert [(s["name"], s["family"]) for s in students] == [("student", "hf"), ("peer1", "hf")]
    assert students[1]["parameters"] < students[0]["parameters"]


def test_born_again_generations_of_an_hf_student(cached_and_not):
    (result, reporter), _ = cached_and_not("born-again")
    assert [g["name"] for g in result.metrics["generations"]] == ["generation1", "generation2"]
    assert any(m == "Generation 2 of 2, taught by generation 1" for _, m in reporter.events)


def test_a_later_job_whose_first_teacher_tokenizes_otherwise_reads_no_cached_table(text_task, tmp_path):
    """Every teacher reads the ids of the first teacher's tokenizer: the second teacher's outputs kept by one
    job are not the outputs it gives on the ids of another tokenizer."""
    store = FolderCacheStore(tmp_path / "store")
    first, _ = distill(text_task.job(teachers=2), text_task.files(2), tmp_path / "first", store)
    retokenized = shutil.copytree(text_task.teacher, tmp_path / "retokenized")
    bert_tokenizer_folder(retokenized, sentences=[s.upper() for s in reversed(SENTENCES)][:4])
    ids = [
        AutoTokenizer.from_pretrained(folder)("the dog sat")["input_ids"]
        for folder in (text_task.teacher, retokenized)
    ]
    assert ids[0] != ids[1]

    job = text_task.job(teachers=2)
    files = JobFiles([retokenized, text_task.narrow_teacher], text_task.train, text_task.validation)
    second, _ = distill(job, files, tmp_path / "second", store)
    assert first.metrics["teacher_cache"]["status"] == second.metrics["teacher_cache"]["status"] == "miss"
    uncached, _ = distill(without_cache(job), files, tmp_path / "uncached")
    assert_same_student(second, uncached)


def test_bfloat16_steps_train_an_hf_student_that_stays_float32(text_task, tmp_path):
    result, reporter = distill(
        text_task.job(training={"precision": "bf16"}), text_task.files(), tmp_path / "out"
    )
    assert all(math.isfinite(value) for value in series(reporter, "loss"))
    weights = load_file(unpacked(result, tmp_path / "student") / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


RANKS = 2


def run_rank(rank: int, port: int, job: EngineJob, files: JobFiles, out: Path) -> None:
    """One of two ranks (torch.multiprocessing's entry), as torchrun starts them; writes its metrics (None
    but on rank 0) to `out/rank-<rank>.json`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    ranks = join_ranks(torch.device("cpu"))
    try:
        reporter = RecordingReporter() if ranks.main else SilentReporter()
        result = run_distillation(job, files, out / f"rank-{rank}", reporter, ranks=ranks)
        (out / f"rank-{rank}.json").write_text(json.dumps(None if result is None else result.metrics))
    finally:
        leave_ranks()


def test_two_processes_train_an_hf_student_with_hf_teachers(text_task, tmp_path):
    job = text_task.job(training={"devices": RANKS})
    mp.spawn(run_rank, args=(free_port(), job, text_task.files(), tmp_path), nprocs=RANKS)
    main, other = (json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(RANKS))
    assert other is None and main["teacher"]["accuracy"] == 1.0
    assert "student.hf.zip" in {path.name for path in (tmp_path / "rank-0").iterdir()}
    assert list((tmp_path / "rank-1").iterdir()) == []


# Images -----------------------------------------------------------------------------------------------


@dataclass
class ImageTask:
    teacher: Path
    data: dict[str, tuple[Path, Path]]  # format -> (training, validation) files
    validation_pixels: np.ndarray


@pytest.fixture(scope="module")
def image_task(tmp_path_factory) -> ImageTask:
    directory = tmp_path_factory.mktemp("images")
    pixels, labels = coloured_images(48, seed=0)
    validation_pixels, validation_labels = coloured_images(18, seed=1)
    data = {
        "npz": (
            write_image_npz(directory / "train.npz", pixels, labels),
            write_image_npz(directory / "validation.npz", validation_pixels, validation_labels),
        ),
        "parquet": (
            write_image_parquet(directory / "train.parquet", pixels, labels),
            write_image_parquet(directory / "validation.parquet", validation_pixels, validation_labels),
        ),
    }
    return ImageTask(vit_teacher_folder(directory / "vit", pixels, labels), data, validation_pixels)


# Each student on one of the formats: a MobileNet's export alone takes seconds.
@pytest.mark.parametrize(("model_type", "data_format"), [("mobilenet_v2", "parquet"), ("resnet", "npz")])
def test_a_vit_teacher_teaches_an_hf_image_student_whose_folder_runs_in_transformers(
    image_task, tmp_path, model_type, data_format
):
    teacher = spec_of(image_task.teacher)
    student = student_from_config(teacher, {"model_type": model_type, **CONFIGS[model_type]})
    train, validation = image_task.data[data_format]
    job = make_job([teacher], student, training={"learning_rate": 1e-2})
    result, _ = distill(job, JobFiles([image_task.teacher], train, validation), tmp_path / "out")
    assert result.metrics["teacher"]["accuracy"] > 0.9

    program = torch.export.load(result.artifacts["student.pt2"]).module()
    with torch.no_grad():
        logits = program(torch.from_numpy(image_task.validation_pixels).float() / 255)
    classify = pipeline("image-classification", model=str(unpacked(result, tmp_path / "student")), top_k=1)
    # Images at the student's input shape: the processor's resizing leaves them as they are.
    predicted = [
        results[0]["label"] for results in classify([pil_image(p) for p in image_task.validation_pixels])
    ]
    top_two = logits.topk(2, dim=1).values
    clear = (top_two[:, 0] - top_two[:, 1]) > 1e-4  # no tie that rounding could turn
    assert clear.sum() > len(clear) // 2
    expected = [COLOURS[index] for index in logits.argmax(dim=1).tolist()]
    compared = [(p, e) for p, e, c in zip(predicted, expected, clear.tolist(), strict=True) if c]
    assert [p for p, _ in compared] == [e for _, e in compared]
