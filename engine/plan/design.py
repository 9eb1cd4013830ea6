"""Student architectures designed from the teacher's: same family and task, fewer and narrower layers
(DistilBERT-style, Sanh et al. 2019). Pure spec arithmetic, without torch, so the API can show the
derived architecture when the job is submitted."""

import math

from pydantic.fields import FieldInfo

from engine.plan.hf_design import derive_hf_spec
from engine.plan.scaling import layer_selection, scaled
from engine.plan.specs import CNNSpec, HFSpec, MLPSpec, TransformerSpec

StudentSpec = MLPSpec | CNNSpec | TransformerSpec


def derive_spec(teacher_spec: StudentSpec | HFSpec, depth: float, width: float) -> StudentSpec | HFSpec:
    """The teacher's architecture with `depth` of its layers and `width` of its layer sizes.

    Counts and sizes round half up and never drop below 1 (below a field's minimum for transformers).
    MLP: the kept hidden layers are those `layer_selection` picks, each narrowed. CNN: every stage
    stays, with fewer blocks and narrower widths. Transformer: fewer encoder layers; `hidden_size`
    narrowed to a multiple of `num_heads` (the head count stays), `intermediate_size` narrowed. A
    `transformers` model: `hf_design.derive_hf_spec`.
    Raises ValueError unless 0 < depth <= 1 and 0 < width <= 1: the job spec bounds them, so this is a
    guard, and a ValueError inside a pydantic validator becomes an ordinary validation error.
    """
    for name, fraction in (("depth", depth), ("width", width)):
        if not 0 < fraction <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {fraction}")
    if isinstance(teacher_spec, HFSpec):
        return derive_hf_spec(teacher_spec, depth, width)
    if isinstance(teacher_spec, MLPSpec):
        return _derive_mlp(teacher_spec, depth, width)
    if isinstance(teacher_spec, CNNSpec):
        return _derive_cnn(teacher_spec, depth, width)
    return _derive_transformer(teacher_spec, depth, width)


def _derive_mlp(spec: MLPSpec, depth: float, width: float) -> MLPSpec:
    teacher_sizes = spec.hidden_sizes
    kept = layer_selection(len(teacher_sizes), scaled(len(teacher_sizes), depth) if teacher_sizes else 0)
    hidden_sizes = [scaled(teacher_sizes[index], width) for index in kept]
    return _validated(spec, hidden_sizes=hidden_sizes)


def _derive_cnn(spec: CNNSpec, depth: float, width: float) -> CNNSpec:
    return _validated(
        spec,
        blocks_per_stage=scaled(spec.blocks_per_stage, depth),
        widths=[scaled(stage_width, width) for stage_width in spec.widths],
    )


def _derive_transformer(spec: TransformerSpec, depth: float, width: float) -> TransformerSpec:
    limits = TransformerSpec.model_fields
    heads = spec.num_heads
    minimum_hidden = math.ceil(_field_minimum(limits["hidden_size"]) / heads) * heads
    hidden_size = max(minimum_hidden, scaled(spec.hidden_size // heads, width) * heads)
    return _validated(
        spec,
        num_layers=scaled(spec.num_layers, depth),
        hidden_size=hidden_size,
        intermediate_size=scaled(spec.intermediate_size, width, _field_minimum(limits["intermediate_size"])),
    )


def _field_minimum(field_info: FieldInfo) -> int:
    return next(rule.ge for rule in field_info.metadata if hasattr(rule, "ge"))


def _validated(spec: StudentSpec, **changes) -> StudentSpec:
    # model_copy(update=...) skips validation; rebuilding checks the new sizes against the field limits.
    return type(spec).model_validate(spec.model_dump() | changes)


def layer_count(spec: StudentSpec) -> int:
    """The layers initialisation from the teacher maps: hidden layers, blocks per stage, encoder layers."""
    if isinstance(spec, MLPSpec):
        return len(spec.hidden_sizes)
    if isinstance(spec, CNNSpec):
        return spec.blocks_per_stage
    return spec.num_layers
