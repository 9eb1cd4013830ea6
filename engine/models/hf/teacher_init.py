"""A `transformers` student initialised from its teacher's weights, DistilBERT-style (Sanh et al., 2019):
each student layer copies one teacher layer (`layer_selection`: every second one at half the depth), every
other tensor (embeddings, stem, classifier) the teacher's of the same name; where the student is narrower, the
teacher tensor's leading slice (`engine.models.teacher_init.copy_from_teacher`). Only between models of one
model type: their tensors have the same names.

A causal language model's student, Minitron-style (Muralidharan et al. 2024, with the leading channels where
Minitron ranks them by their activations): its layers are the teacher's evenly spread ones, the first and
the last among them (`spread_selection`), each cut to its leading query and key-value heads, feed-forward
neurons and hidden channels. The same leading channels of the hidden state in every tensor (embeddings,
norms, projections, LM head) keep the cut model consistent. A fused projection (Phi-3's `qkv_proj` and
`gate_up_proj`, GPT-2's `c_attn`) is cut part by part, so that its queries, keys and values (or gates and
ups) stay the teacher's. Tied embeddings stay tied: the LM head is the embeddings' tensor."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig

from engine.models.teacher_init import InitReport, copy_from_teacher
from engine.plan.hf_models import HF_TASKS
from engine.plan.scaling import layer_selection, spread_selection

# The repeated layers of each model type, by their state-dict names in the wrapper (under `model.`): group 1
# names the group (a stage's blocks), group 2 is the layer's index in it. A model type not listed has no
# layers of its own to map (ALBERT shares one group of weights across its layers): its tensors match by name.
_ENCODER = re.compile(r"^(model\.[a-z0-9_]+\.encoder\.layer\.)(\d+)\.")
_STAGES = re.compile(r"^(model\.[a-z0-9_]+\.encoder\.stages\.\d+\.layers\.)(\d+)\.")
LAYER_KEYS = {
    **dict.fromkeys(
        (
            "bert",
            "camembert",
            "deberta",
            "deberta-v2",
            "dinov2",
            "electra",
            "ernie",
            "megatron-bert",
            "mobilebert",
            "mpnet",
            "roberta",
            "roberta-prelayernorm",
            "xlm-roberta",
        ),
        _ENCODER,
    ),
    "distilbert": re.compile(r"^(model\.distilbert\.transformer\.layer\.)(\d+)\."),
    "modernbert": re.compile(r"^(model\.model\.layers\.)(\d+)\."),
    **dict.fromkeys(("beit", "deit", "vit"), re.compile(r"^(model\.[a-z]+\.layers\.)(\d+)\.")),
    **dict.fromkeys(("bit", "convnext", "convnextv2", "regnet", "resnet"), _STAGES),
    "swin": re.compile(r"^(model\.swin\.encoder\.layers\.\d+\.blocks\.)(\d+)\."),
    "mobilenet_v1": re.compile(r"^(model\.mobilenet_v1\.layer\.)(\d+)\."),
    "mobilenet_v2": re.compile(r"^(model\.mobilenet_v2\.layer\.)(\d+)\."),
    # Numbered across its stages: a student of other depths takes evenly spaced blocks of the whole network.
    "efficientnet": re.compile(r"^(model\.efficientnet\.encoder\.blocks\.)(\d+)\."),
    **dict.fromkeys(
        ("llama", "mistral", "phi3", "qwen2", "qwen3"), re.compile(r"^(model\.model\.layers\.)(\d+)\.")
    ),
    "gpt2": re.compile(r"^(model\.transformer\.h\.)(\d+)\."),
}


@dataclass(frozen=True)
class Fused:
    """A tensor holding several parts side by side along `dim`, of the relative sizes `parts` gives for a
    model's config."""

    dim: int
    parts: Callable[[PretrainedConfig], tuple[int, ...]]


_THIRDS = Fused(1, lambda config: (1, 1, 1))  # GPT-2's Conv1D weight is [in, out]: q, k, v along out
# By the end of their state-dict names.
FUSED = {
    "gpt2": {
        ".attn.c_attn.weight": _THIRDS,
        ".attn.c_attn.bias": Fused(0, _THIRDS.parts),
    },
    "phi3": {
        ".self_attn.qkv_proj.weight": Fused(
            0,
            lambda config: (
                config.num_attention_heads,
                config.num_key_value_heads,
                config.num_key_value_heads,
            ),
        ),
        ".mlp.gate_up_proj.weight": Fused(0, lambda config: (1, 1)),
    },
}


def initialise_hf_student(student: nn.Module, teacher: nn.Module) -> str:
    """Copy the teacher's weights into the student (both wrapped `transformers` classifiers); returns what was
    done, in words, for the job's events. A student of another model type, or deeper than the teacher in some
    group of layers, is left as initialised, and the words say why."""
    student_type, teacher_type = (model.model.config.model_type for model in (student, teacher))
    if student_type != teacher_type:
        return (
            f"Student left as initialised: a {student_type} student cannot start from the weights of a "
            f"{teacher_type} teacher, whose tensors are others; one of the teacher's model type can."
        )
    teacher_state = teacher.state_dict()
    pattern = LAYER_KEYS.get(student_type)
    student_layers = _layer_counts(pattern, student.state_dict())
    teacher_layers = _layer_counts(pattern, teacher_state)
    for group, count in student_layers.items():
        if count > teacher_layers.get(group, 0):
            return (
                f"Student left as initialised: its {_short(group)} has {count} layers and the teacher's "
                f"{teacher_layers.get(group, 0)}, and each student layer starts from a teacher layer of its "
                "own: give the student at most the teacher's layers."
            )
    selection = spread_selection if HF_TASKS[student_type] == "causal-lm" else layer_selection
    layer_map = {group: selection(teacher_layers[group], count) for group, count in student_layers.items()}
    report = InitReport(layer_map={_short(group): indices for group, indices in layer_map.items()})
    teacher_name = partial(_teacher_name, pattern=pattern, layer_map=layer_map)
    teacher_state |= _fused_parts_cut(student, teacher, teacher_state, teacher_name)
    return copy_from_teacher(student, teacher_state, teacher_name, report).summary


def _fused_parts_cut(
    student: nn.Module,
    teacher: nn.Module,
    teacher_state: dict[str, Tensor],
    teacher_name: Callable[[str], str],
) -> dict[str, Tensor]:
    """The teacher's fused tensors, by name, each part cut along its `dim` to the student's part: the leading
    slice `copy_from_teacher` then takes is the student's tensor."""
    fused = FUSED.get(student.model.config.model_type, {})
    cut = {}
    for name, target in student.state_dict().items():
        kind = next((kind for suffix, kind in fused.items() if name.endswith(suffix)), None)
        source = teacher_state.get(teacher_name(name))
        if kind is None or source is None or source.dim() != target.dim():
            continue
        teacher_parts = _part_sizes(source.shape[kind.dim], kind.parts(teacher.model.config))
        student_parts = _part_sizes(target.shape[kind.dim], kind.parts(student.model.config))
        if all(wanted <= available for wanted, available in zip(student_parts, teacher_parts, strict=True)):
            pieces = source.split(teacher_parts, dim=kind.dim)
            cut[teacher_name(name)] = torch.cat(
                [piece.narrow(kind.dim, 0, size) for piece, size in zip(pieces, student_parts, strict=True)],
                dim=kind.dim,
            )
    return cut


def _part_sizes(total: int, parts: tuple[int, ...]) -> list[int]:
    return [total * part // sum(parts) for part in parts]


def _layer_counts(pattern: re.Pattern | None, state: dict[str, Tensor]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in state if pattern is not None else ():
        match = pattern.match(name)
        if match:
            counts[match[1]] = max(counts.get(match[1], 0), int(match[2]) + 1)
    return counts


def _teacher_name(student_name: str, pattern: re.Pattern | None, layer_map: dict[str, list[int]]) -> str:
    match = pattern.match(student_name) if pattern is not None else None
    if match is None:
        return student_name
    return f"{match[1]}{layer_map[match[1]][int(match[2])]}{student_name[match.end(2) :]}"


def _short(group: str) -> str:
    """`model.resnet.encoder.stages.0.layers.` -> `resnet.encoder.stages.0.layers`."""
    return group.removeprefix("model.").removesuffix(".")
