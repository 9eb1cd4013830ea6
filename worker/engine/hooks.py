"""Reach a model's intermediate layers by name with forward hooks, without rewriting the model."""

from collections.abc import Iterable

from torch import Tensor, nn

from worker.engine.errors import DistillError

LISTED_NAMES = 30


class LayerTaps:
    """Records the outputs of the named submodules at every forward pass of `model`.

    `outputs[path]` holds the latest output of `model.get_submodule(path)`; call `remove()` when done.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str):
        self.outputs: dict[str, Tensor] = {}
        self._handles = [self._tap(model, path, role) for path in dict.fromkeys(paths)]

    def _tap(self, model: nn.Module, path: str, role: str):
        module = find_layer(model, path, role)

        def record(_module, _inputs, output):
            self.outputs[path] = output

        return module.register_forward_hook(record)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def find_layer(model: nn.Module, path: str, role: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        shown = ", ".join(names[:LISTED_NAMES]) + (
            f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
        )
        if not names:
            shown = "none: this model's layers cannot be reached by name (a pt2 teacher is one flat graph)"
        raise DistillError(
            "unknown_layer", f"the {role} has no layer {path!r}; its layers are: {shown}"
        ) from None
