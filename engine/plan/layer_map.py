"""Which teacher layer each student layer learns from (TinyBERT's mapping g). Pure arithmetic, without
torch, so the job rules (`rules`) check a request's `layer_map` with it before any model is built."""

from engine.plan.errors import JobFailed

REQUEST_FIELD = "distillation.transformer.layer_map"


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """0-based teacher layer for each student layer: g(m) = m * N / M, rounded up, for m = 1..M.

    Rounding up never maps a student layer to the embeddings (g = 0) and always maps the last
    student layer to the last teacher layer, also when the student is the deeper model.
    """
    return [-(-m * teacher_layers // student_layers) - 1 for m in range(1, student_layers + 1)]


def check_layer_map(layer_map: list[int], student_layers: int, teacher_layers: int) -> list[int]:
    """The map, if it gives each student layer a teacher layer index; `invalid_layer_map` otherwise."""
    if len(layer_map) != student_layers:
        raise JobFailed(
            "invalid_layer_map",
            f"layer_map has {len(layer_map)} entries but the student has {student_layers} layers: give one "
            f"teacher layer index per student layer (the teacher has {teacher_layers} layers: "
            f"0 to {teacher_layers - 1}).",
            REQUEST_FIELD,
        )
    out_of_range = [index for index in layer_map if not is_layer_index(index, teacher_layers)]
    if out_of_range:
        raise JobFailed(
            "invalid_layer_map",
            f"layer_map entries {out_of_range} are not teacher layer indices: the teacher has "
            f"{teacher_layers} layers, so each entry must be in [0, {teacher_layers - 1}] (0-based).",
            REQUEST_FIELD,
        )
    return list(layer_map)


def is_layer_index(index: object, num_layers: int) -> bool:
    return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < num_layers
