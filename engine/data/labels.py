"""A dataset's labels as the class ids of a model whose config names its labels (a Hugging Face one):
a label is a name of the config's `label2id` or a class id `0 .. num_labels - 1`; any other is refused,
naming the label, where it is and the labels the model knows."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from engine.data.arrays import invalid

SHOWN_LABELS = 5


def label_names(config: Mapping[str, Any], num_labels: int) -> dict[str, int]:
    """Label name -> class id: the config's `label2id`, else its `id2label` turned round, else the names
    transformers gives labels by default (`LABEL_0`, `LABEL_1`, ...)."""
    if config.get("label2id"):
        return {str(name): int(label_id) for name, label_id in config["label2id"].items()}
    if config.get("id2label"):
        return {str(name): int(label_id) for label_id, name in config["id2label"].items()}
    return {f"LABEL_{label_id}": label_id for label_id in range(num_labels)}


def label_ids(
    labels: Sequence[int | str],
    names: Mapping[str, int],
    num_labels: int,
    where: Callable[[int], str],
) -> np.ndarray:
    """int64 class ids [N]; `where(index)` says where label `index` is (`line 3`, `row 2`)."""
    ids = np.empty(len(labels), dtype=np.int64)
    for index, label in enumerate(labels):
        label_id = names.get(label) if isinstance(label, str) else label
        if label_id is None or isinstance(label, bool) or not 0 <= label_id < num_labels:
            raise unknown_label(label, where(index), names, num_labels)
        ids[index] = label_id
    return ids


def unknown_label(label: object, where: str, names: Mapping[str, int], num_labels: int) -> Exception:
    shown = ", ".join(repr(name) for name in list(names)[:SHOWN_LABELS])
    more = len(names) - SHOWN_LABELS
    known = shown + (f" and {more:,} more" if more > 0 else "")
    return invalid(
        f"the label {label!r} of {where} is not one the teacher knows: its labels are {known} "
        f"(or their class ids, 0 to {num_labels - 1}); use those, or a teacher trained on these labels"
    )
