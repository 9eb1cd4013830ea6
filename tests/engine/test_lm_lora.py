"""A LoRA student of a causal language model (`student.lora`): only its adapters train, on a student derived
from the teacher or on a copy of it; it comes out merged into plain weights (`student.hf.zip`, which
transformers loads without peft) and as peft's adapter (`student.lora.zip`), which gives the same student on
the weights it applies to."""

import json
import zipfile
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from engine.models.hf.build import build_hf_model
from engine.models.hf.loading import load_hf_model
from engine.models.hf.lora import add_lora
from engine.models.hf.teacher_init import initialise_hf_student
from engine.plan.design import derive_spec
from engine.plan.errors import JobFailed
from engine.plan.hf_models import CAUSAL_LM_MODEL_TYPES
from engine.plan.lora_adapters import DECODER_LINEAR_LAYERS
from engine.plan.rules import check_job
from engine.plan.specs import EngineJob, LoraConfig
from engine.train.checkpoints import Checkpoints
from tests.engine.factories import FolderStore, KilledAt, WorkerKilled, series
from tests.engine.test_hf_methods import spec_of
from tests.engine.test_lm_distillation import EPOCHS, distill, student_weights
from tests.lm_factories import write_jsonl
from tests.lm_model_factories import LM_CONFIGS, LM_MAX_LENGTH, TEXTS, lm_folder, lm_spec, lm_token_ids

COPY, HALF = 1.0, 0.5  # student.derive's depth: a copy of the teacher, half its layers


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm_task(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    teacher = lm_folder(folder / "teacher", request.param)
    train = write_jsonl(folder / "train.jsonl", [{"text": text} for text in TEXTS * 2])
    return teacher, train


def lora_job(teacher: Path, depth: float, **distillation) -> EngineJob:
    teacher_spec = spec_of(teacher)
    student = derive_spec(teacher_spec, depth, 1.0).model_copy(update={"max_length": LM_MAX_LENGTH})
    return EngineJob.model_validate(
        {
            "teachers": [{"format": "hf", "architecture": teacher_spec}],
            "student_architecture": student,
            "student_init": "teacher",
            "student_lora": {"r": 4, "alpha": 8},
            "distillation": {"temperature": 1.0, "alpha": 1.0, "beta": 0.0} | distillation,
            "training": {"epochs": EPOCHS, "batch_size": 4, "learning_rate": 1e-2, "device": "cpu"},
        }
    )


def initial_student(job: EngineJob, teacher: Path) -> nn.Module:
    """The transformers model the job's student started as: derived from the teacher, with its weights."""
    student = build_hf_model(job.student_architecture)
    initialise_hf_student(student, load_hf_model(teacher, job.teachers[0].architecture))
    return student.model.eval()


def unpacked(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as files:
        files.extractall(folder)
    return folder


def zipped_weights(archive: Path, name: str) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(archive) as files:
        return load(files.read(name))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=lm_token_ids(count=3)).logits


def adapter_updates(adapter: Path) -> dict[str, torch.Tensor]:
    """B @ A * alpha / r of each adapted weight, by the weight's name in the model's safetensors (in its
    layout: GPT-2's Conv1D weights are [in, out])."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load((adapter / "adapter_model.safetensors").read_bytes())
    scale = config["lora_alpha"] / config["r"]
    updates = {}
    for name, down in weights.items():
        if ".lora_A." in name:
            layer = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            update = weights[name.replace(".lora_A.", ".lora_B.")] @ down * scale
            updates[f"{layer}.weight"] = update.T if config["fan_in_fan_out"] else update
    return updates


def test_a_lora_student_learns_the_teacher_in_its_adapters_alone(lm_task, tmp_path):
    teacher, _ = lm_task
    job = lora_job(teacher, HALF)
    result, reporter = distill(job, lm_task, tmp_path / "job")

    kl = series(reporter, "validation_kl")
    assert len(kl) == EPOCHS and kl[-1] < 0.95 * kl[0]
    lora = result.metrics["lora"]
    assert 0 < lora["trainable_parameters"] < 0.2 * lora["parameters"]
    assert lora["merge_max_abs_difference"] < 1e-4
    assert any(
        message.startswith(
            f"LoRA student: adapters of rank 4 (alpha 8) on {', '.join(lora['target_modules'])} "
        )
        and f"train {lora['trainable_parameters']:,} of its {lora['parameters']:,} parameters" in message
        for _level, message in reporter.events
    )
    assert set(result.artifacts) == {"student.hf.zip", "student.lora.zip", "metrics.json"}

    # The merged student is its initial weights plus each adapter's B @ A * alpha / r, and nothing else.
    adapter = unpacked(result.artifacts["student.lora.zip"], tmp_path / "adapter")
    updates, merged = adapter_updates(adapter), student_weights(result)
    initial = initial_student(job, teacher).state_dict()
    assert updates and all(update.abs().max() > 1e-3 for update in updates.values())
    for name, weight in merged.items():
        if name in updates:
            torch.testing.assert_close(weight, initial[name] + updates[name], rtol=0, atol=1e-6)
        else:
            assert torch.equal(weight, initial[name]), name


def test_the_merged_folder_and_the_adapter_on_the_initial_student_are_the_same_model(lm_task, tmp_path):
    teacher, _ = lm_task
    job = lora_job(teacher, HALF)
    result, reporter = distill(job, lm_task, tmp_path / "job")

    folder = unpacked(result.artifacts["student.hf.zip"], tmp_path / "student")
    assert (
        "peft" not in (folder / "config.json").read_text() and not (folder / "adapter_config.json").exists()
    )
    merged = AutoModelForCausalLM.from_pretrained(folder)
    adapter = unpacked(result.artifacts["student.lora.zip"], tmp_path / "adapter")
    adapted = PeftModel.from_pretrained(initial_student(job, teacher), adapter)
    torch.testing.assert_close(logits(merged), logits(adapted), rtol=0, atol=1e-5)
    assert result.metrics["student"]["parameters"] == sum(p.numel() for p in merged.parameters())
    assert "the derived student's initial weights" in (adapter / "README.md").read_text()
    assert any("applies to the derived student's initial weights" in m for _level, m in reporter.events)


def test_a_lora_copy_of_the_teacher_comes_with_an_adapter_of_the_teacher_itself(lm_task, tmp_path):
    teacher, _ = lm_task
    # A copy of the teacher starts at a KL of 0 to it: what it learns comes from the data (beta).
    result, reporter = distill(lora_job(teacher, COPY, alpha=0.5, beta=0.5), lm_task, tmp_path / "job")

    adapter = unpacked(result.artifacts["student.lora.zip"], tmp_path / "adapter")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(teacher), adapter)
    merged = AutoModelForCausalLM.from_pretrained(
        unpacked(result.artifacts["student.hf.zip"], tmp_path / "hf")
    )
    torch.testing.assert_close(logits(merged), logits(adapted), rtol=0, atol=1e-5)
    assert not torch.allclose(logits(merged), logits(AutoModelForCausalLM.from_pretrained(teacher)))
    teacher_weights = load((teacher / "model.safetensors").read_bytes())
    embeddings = next(
        name for name in teacher_weights if name.endswith(("embed_tokens.weight", "wte.weight"))
    )
    assert torch.equal(student_weights(result)[embeddings], teacher_weights[embeddings])
    assert any("applies to the teacher itself" in message for _level, message in reporter.events)


def test_a_killed_worker_resumes_a_lora_student_to_the_same_one(lm_task, tmp_path):
    job = lora_job(lm_task[0], HALF)
    uninterrupted, _ = distill(job, lm_task, tmp_path / "whole")
    store = FolderStore(tmp_path / "store")
    with pytest.raises(WorkerKilled):
        distill(job, lm_task, tmp_path / "killed", KilledAt(kill_at=5), Checkpoints(store, 0.0))
    resumed, reporter = distill(job, lm_task, tmp_path / "resumed", checkpoints=Checkpoints(store, 0.0))

    assert any(message.startswith("Resumed from the checkpoint") for _level, message in reporter.events)
    assert resumed.series == uninterrupted.series
    weights = {"student.hf.zip": "model.safetensors", "student.lora.zip": "adapter_model.safetensors"}
    for artifact, name in weights.items():
        ours, theirs = (
            zipped_weights(result.artifacts[artifact], name) for result in (resumed, uninterrupted)
        )
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in theirs)


@pytest.mark.parametrize("model_type", sorted(LM_CONFIGS))
def test_the_adapters_of_each_model_type_train_alone_under_the_wrapper(model_type):
    torch.manual_seed(0)
    teacher = build_hf_model(lm_spec(model_type))
    student = build_hf_model(lm_spec(model_type)).eval()  # GPT-2's dropout off
    ids = lm_token_ids()
    before = student(ids)
    lora = add_lora(student, LoraConfig(), teacher)

    trainable = [name for name, parameter in student.named_parameters() if parameter.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert type(student.lm_head()) is nn.Linear and not student.lm_head().weight.requires_grad
    torch.testing.assert_close(student(ids), before, rtol=0, atol=0)  # B starts at 0
    assert lora.figures["trainable_parameters"] == sum(
        parameter.numel() for parameter in student.parameters() if parameter.requires_grad
    )
    assert lora.figures["base"] == "derived"


def test_the_adapters_apply_to_the_teacher_where_the_student_copies_it():
    teacher = build_hf_model(lm_spec("llama"))
    student = build_hf_model(lm_spec("llama"))
    student.load_state_dict(teacher.state_dict())
    assert add_lora(student, LoraConfig(), teacher).figures["base"] == "teacher"


def test_a_lora_student_compiles_whole_and_its_gradients_reach_the_adapters_alone():
    torch.manual_seed(0)
    student = build_hf_model(lm_spec("llama"))
    add_lora(student, LoraConfig(), build_hf_model(lm_spec("llama")))
    compiled = torch.compile(student, backend="aot_eager", fullgraph=True)  # fullgraph: no graph break
    compiled(lm_token_ids()).square().mean().backward()
    graded = {name for name, parameter in student.named_parameters() if parameter.grad is not None}
    assert graded == {name for name, parameter in student.named_parameters() if parameter.requires_grad}


def test_targets_no_layer_of_the_model_has_are_refused_by_their_field():
    student = build_hf_model(lm_spec("llama"))
    with pytest.raises(JobFailed, match="student.lora.target_modules: ") as refused:
        add_lora(student, LoraConfig(target_modules=["layers.99.self_attn.q_proj"]), student)
    assert refused.value.param == "student.lora.target_modules"


def lora_refusal(job: EngineJob) -> JobFailed:
    with pytest.raises(JobFailed) as refused:
        check_job(job)
    return refused.value


def test_lora_is_refused_for_a_classifier_and_a_student_not_from_the_teacher(tmp_path):
    job = lora_job(lm_folder(tmp_path / "teacher"), HALF)
    check_job(job)
    refused = lora_refusal(job.model_copy(update={"student_init": "random"}))
    assert refused.param == "student.lora" and "starts at random" in refused.message

    classifier = EngineJob.model_validate(
        {
            "teachers": [{"format": "pt2"}],
            "student_architecture": {"family": "mlp", "input_shape": [4], "num_classes": 2},
            "student_init": "teacher",
            "student_lora": {},
        }
    )
    refused = lora_refusal(classifier)
    assert refused.param == "student.lora" and "adapts a causal language model" in refused.message


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens", "mlp.q_proj"])
def test_targets_other_than_a_decoder_layers_linear_layers_are_refused(tmp_path, target):
    job = lora_job(lm_folder(tmp_path / "teacher"), HALF)
    lora = LoraConfig(target_modules=["q_proj", target])
    refused = lora_refusal(job.model_copy(update={"student_lora": lora}))
    assert refused.param == "student.lora.target_modules.1" and "self_attn.q_proj" in refused.message


@pytest.mark.parametrize("target", ["q_proj", "self_attn.o_proj", "layers.0.mlp.down_proj"])
def test_a_decoder_layers_linear_layers_may_be_targeted(tmp_path, target):
    job = lora_job(lm_folder(tmp_path / "teacher"), HALF)
    check_job(job.model_copy(update={"student_lora": LoraConfig(target_modules=[target])}))


def test_every_causal_lm_model_type_has_its_adaptable_layers():
    assert set(DECODER_LINEAR_LAYERS) == set(CAUSAL_LM_MODEL_TYPES)
    for model_type, layers in DECODER_LINEAR_LAYERS.items():
        model = build_hf_model(lm_spec(model_type)).model
        linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear | Conv1D)}
        assert all(any(name.endswith(f".{layer}") for name in linear) for layer in layers), model_type
