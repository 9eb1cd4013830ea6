"""A `transformers` student as a `save_pretrained` folder, which `AutoModelForSequenceClassification` /
`AutoModelForImageClassification` / `AutoModelForCausalLM.from_pretrained` and `transformers.pipeline` load
with no code of ours, and that folder as one zip archive to download.

The folder: `config.json` (a classifier's with the labels, `id2label` and `label2id`), `model.safetensors`
(the student's weights alone), what turns raw inputs into the student's (text: the teacher's tokenizer,
its chat template included, saved anew by transformers; images: a `preprocessor_config.json` that resizes
to the student's input_shape, scales to [0, 1] and normalises with its mean and std, as the student was
trained), and a causal language model's `generation_config.json` (the teacher's where its folder has one:
its sampling defaults and special token ids, which are the student's too). The service adds the job's
model card as `README.md`.

A LoRA student's adapter comes apart too, as `student.lora.zip`: peft's adapter folder (`adapter_config.json`,
`adapter_model.safetensors`) and a README that says what it applies to.
"""

import zipfile
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, GenerationConfig, PreTrainedModel, ViTImageProcessorPil

from engine.models.hf.lora import LoraStudent, lora_summary
from engine.models.hf.quiet import no_progress_bars
from engine.plan.hf_archive import GENERATION_CONFIG
from engine.plan.hf_models import LORA_ARTIFACT, PRETRAINED_ARTIFACT
from engine.plan.lora_adapters import ADAPTER_BASES
from engine.plan.specs import HFSpec

PRETRAINED_FOLDER = "student.hf"
LORA_FOLDER = "student.lora"


def export_pretrained(model: nn.Module, spec: HFSpec, teacher_folder: Path | None, out_dir: Path) -> Path:
    """`student.hf.zip` in `out_dir`: the student's `save_pretrained_folder`, zipped."""
    folder = save_pretrained_folder(model, spec, out_dir / PRETRAINED_FOLDER, teacher_folder)
    return archive_folder(folder, out_dir / PRETRAINED_ARTIFACT)


def save_pretrained_folder(
    model: nn.Module, spec: HFSpec, out_dir: Path, teacher_folder: Path | None
) -> Path:
    """Write the wrapped student `model` of `spec` to `out_dir`; `teacher_folder`: the teacher's unpacked
    `save_pretrained` folder, whose tokenizer a text student or language model reads its text with."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model: PreTrainedModel = model.model
    if spec.task == "causal-lm" and teacher_folder is not None:
        teacher_generation = teacher_folder / GENERATION_CONFIG
        if teacher_generation.is_file():
            hf_model.generation_config = GenerationConfig.from_pretrained(teacher_folder)
    with no_progress_bars():
        hf_model.save_pretrained(out_dir)
    if spec.task != "image":
        if teacher_folder is None:
            raise ValueError(
                f"a {spec.task} student is saved with its teacher's tokenizer: give the teacher's folder"
            )
        tokenizer = AutoTokenizer.from_pretrained(
            teacher_folder, local_files_only=True, trust_remote_code=False
        )
        tokenizer.model_max_length = spec.max_length
        tokenizer.save_pretrained(out_dir)
    else:
        image_processor(spec).save_pretrained(out_dir)
    return out_dir


def export_adapter(lora: LoraStudent, out_dir: Path) -> Path:
    """`student.lora.zip` in `out_dir`: the LoRA student's adapter as peft saves it, before it is merged."""
    folder = out_dir / LORA_FOLDER
    lora.peft_model.save_pretrained(folder)
    base = ADAPTER_BASES[lora.figures["base"]]
    readme = f"# A LoRA adapter\n\n{lora_summary(lora.figures)}.\n\nIt applies to {base}.\n"
    (folder / "README.md").write_text(readme)  # in place of peft's template
    return archive_folder(folder, out_dir / LORA_ARTIFACT)


def image_processor(spec: HFSpec) -> ViTImageProcessorPil:
    """The preprocessing the student was trained with: the image resized to its input_shape, values scaled
    to [0, 1], normalised with its mean and std (none without them). The PIL-backed processor runs without
    torchvision."""
    _, height, width = spec.input_shape
    normalised = spec.image_mean is not None and spec.image_std is not None
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": height, "width": width},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=normalised,
        image_mean=spec.image_mean if normalised else None,
        image_std=spec.image_std if normalised else None,
    )


def archive_folder(folder: Path, zip_path: Path) -> Path:
    """The folder's files in one zip, at its top level (unzip into the folder to load it)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return zip_path
