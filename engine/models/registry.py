"""Model families by `spec.family`, each in its own module, and what every family shares.

Submodules have stable, readable names (`hidden.0.linear`, `stages.1.0.conv2`, `head`) because
checkpoints are keyed by them and feature distillation reaches layers by name with forward hooks.
Forward passes have no data-dependent control flow, so every model exports with torch.export.
"""

from collections.abc import Callable

from torch import nn

from engine.models.cnn import ResNet
from engine.models.hf.build import build_hf_model
from engine.models.mlp import MLP
from engine.models.transformer import TransformerClassifier
from engine.plan.specs import ArchitectureSpec

# A model built from its spec; `hf`'s are transformers', whose submodules transformers names.
MODEL_FAMILIES: dict[str, Callable[[ArchitectureSpec], nn.Module]] = {
    "mlp": MLP,
    "cnn": ResNet,
    "transformer": TransformerClassifier,
    "hf": build_hf_model,
}


def build_model(spec: ArchitectureSpec) -> nn.Module:
    try:
        family = MODEL_FAMILIES[spec.family]
    except KeyError:
        raise ValueError(f"unknown model family {spec.family!r}; known: {sorted(MODEL_FAMILIES)}") from None
    return family(spec)


def count_parameters(model: nn.Module) -> int:
    """Those torch holds, plus a foreign runtime's (an ONNX teacher's initializers)."""
    return sum(parameter.numel() for parameter in model.parameters()) + getattr(
        model, "runtime_parameters", 0
    )
