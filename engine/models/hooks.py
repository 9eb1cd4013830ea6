"""Reach a model's intermediate layers by name with forward hooks, without rewriting the model."""

from collections.abc import Iterable

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from engine.models.hf.outputs import request_attentions, tap_point
from engine.plan.errors import JobFailed

LISTED_NAMES = 30


class LayerTaps:
    """Records the outputs of the named submodules at every forward pass of `model`.

    `outputs[path]` holds the latest output of `model.get_submodule(path)`, or for a transformers model's
    numbered output (`hidden_states.N`, `attentions.N`) that tensor; with `record_input`, `input` holds the
    model's latest first positional input (e.g. token ids, for a padding mask). Call `remove()` when done.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str, record_input: bool = False):
        self.outputs: dict[str, Tensor] = {}
        self.input: Tensor | None = None
        self._handles = [handle for path in dict.fromkeys(paths) for handle in self._tap(model, path, role)]
        if record_input:
            self._handles.append(model.register_forward_pre_hook(self._record_input))

    def _record_input(self, _module, inputs) -> None:
        self.input = inputs[0]

    def _tap(self, model: nn.Module, path: str, role: str) -> list[RemovableHandle]:
        point = tap_point(model, path, role)
        module = find_layer(model, point.path, role)
        handles = []
        if point.requests_attentions:
            handles.append(module.register_forward_pre_hook(request_attentions, with_kwargs=True))

        def record_input(_module, inputs):
            self.outputs[path] = inputs[0]

        def record_output(_module, _inputs, output):
            # A transformers layer returns a tuple (or a ModelOutput) led by its hidden states; an attention
            # module's tuple holds its probabilities second.
            self.outputs[path] = output if isinstance(output, Tensor) else output[point.index]

        if point.reads_input:
            handles.append(module.register_forward_pre_hook(record_input))
        else:
            handles.append(module.register_forward_hook(record_output))
        return handles

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
            shown = (
                "none: this model's layers cannot be reached by name (a pt2 program that "
                "torch.export.unflatten could not split into its modules runs as one flat graph)"
            )
        raise JobFailed(
            "unknown_layer", f"the {role} has no layer {path!r}; its layers are: {shown}"
        ) from None
