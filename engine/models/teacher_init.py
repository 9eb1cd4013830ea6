"""Students designed from their teacher, DistilBERT-style (Sanh et al., 2019).

A student keeps the teacher's family and task but fewer layers (`depth`) and narrower layers
(`width`), and starts from the teacher's weights instead of from scratch: each student layer copies
one teacher layer (chosen by `layer_selection`), everything outside the layers (stem, embeddings,
classifier) copies the tensor of the same name.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from engine.plan.design import StudentSpec, layer_count, layer_selection
from engine.plan.rules import check_initialisable

# Where each family keeps its repeated layers, and the group of a state-dict key that holds the index.
_LAYER_KEY = {
    "mlp": re.compile(r"^(hidden\.)(\d+)(\.)"),
    "cnn": re.compile(r"^(stages\.\d+\.)(\d+)(\.)"),
    "transformer": re.compile(r"^(layers\.)(\d+)(\.)"),
}


@dataclass
class InitReport:
    """What `init_from_teacher` did with each tensor of the student's state dict.

    `layer_map`: the teacher layer of each student layer; of each group of layers (a stage's blocks) by
    the group's name, for a model with several."""

    layer_map: list[int] | dict[str, list[int]]
    copied: list[str] = field(default_factory=list)
    sliced: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return (
            f"Student initialised from the teacher (teacher layers {self._layers()}): {len(self.copied)} "
            f"tensors copied, {len(self.sliced)} cut to their leading slice, {len(self.skipped)} left as "
            "initialised."
        )

    def _layers(self) -> str:
        if isinstance(self.layer_map, list):
            return _listed(self.layer_map)
        if not self.layer_map:
            return "none of its own: tensors matched by name"
        if len(self.layer_map) == 1:
            return _listed(next(iter(self.layer_map.values())))
        return "; ".join(f"{group} {_listed(indices)}" for group, indices in self.layer_map.items())


def _listed(indices: list[int]) -> str:
    return ", ".join(map(str, indices)) or "none"


def init_from_teacher(
    student: nn.Module, teacher_state: dict[str, Tensor], student_spec: StudentSpec, teacher_spec: StudentSpec
) -> InitReport:
    """Copy teacher tensors (parameters and buffers, BatchNorm statistics included) into `student`.

    Student layer `i` takes teacher layer `layer_selection(...)[i]`; other tensors match by name.
    Where the student is narrower, it gets the teacher tensor's leading slice along every dimension
    (the first rows, columns, channels). That is a heuristic: the kept units are not chosen by
    importance, and sliced layers no longer see every input they were trained with, so a sliced
    student is a better starting point than random weights, not a working model. Tensors with no
    teacher counterpart, a different rank or a larger size keep their fresh initialisation.
    Raises JobFailed for a student of another family or with more layers than the teacher.
    """
    check_initialisable(student_spec, teacher_spec)
    layer_map = layer_selection(layer_count(teacher_spec), layer_count(student_spec))
    teacher_name = partial(_teacher_name, family=student_spec.family, layer_map=layer_map)
    return copy_from_teacher(student, teacher_state, teacher_name, InitReport(layer_map=layer_map))


def copy_from_teacher(
    student: nn.Module,
    teacher_state: dict[str, Tensor],
    teacher_name: Callable[[str], str],
    report: InitReport,
) -> InitReport:
    """Copy into each tensor of the student's state dict the teacher's tensor named `teacher_name(its
    name)`: whole, or its leading slice where the student's is smaller (see `init_from_teacher`)."""
    # state_dict() tensors share storage with the student's parameters and buffers: copying into
    # them writes the student.
    with torch.no_grad():
        for name, target in student.state_dict().items():
            _copy_tensor(name, target, teacher_state.get(teacher_name(name)), report)
    return report


def _teacher_name(student_name: str, family: str, layer_map: list[int]) -> str:
    def teacher_layer(match: re.Match) -> str:
        return f"{match[1]}{layer_map[int(match[2])]}{match[3]}"

    return _LAYER_KEY[family].sub(teacher_layer, student_name, count=1)


def _copy_tensor(name: str, target: Tensor, source: Tensor | None, report: InitReport) -> None:
    if source is None:
        report.skipped[name] = "the teacher has no such tensor"
    elif source.dim() != target.dim():
        report.skipped[name] = (
            f"teacher shape {list(source.shape)} has another rank than {list(target.shape)}"
        )
    elif source.shape == target.shape:
        target.copy_(source)
        report.copied.append(name)
    elif all(wanted <= available for wanted, available in zip(target.shape, source.shape, strict=True)):
        target.copy_(source[tuple(slice(0, size) for size in target.shape)])
        report.sliced.append(name)
    else:
        report.skipped[name] = (
            f"student shape {list(target.shape)} exceeds the teacher's {list(source.shape)}"
        )
