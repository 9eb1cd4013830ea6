"""Writing the trained student in the formats users deploy from."""

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.export import Dim

from engine.plan.specs import CNNSpec, MLPSpec

WEIGHTS = "student.safetensors"
SPEC = "student.json"
PROGRAM = "student.pt2"


def export_student(
    model: nn.Module, spec: MLPSpec | CNNSpec, example_input: Tensor, out_dir: Path
) -> dict[str, Path]:
    """Write the weights, the architecture that rebuilds them, and a self-contained torch.export program.

    `example_input` is any batch of real inputs; only its first sample is used. The caller's model is
    left untouched (exported from an eval-mode CPU copy).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu").eval()
    paths = {WEIGHTS: out_dir / WEIGHTS, SPEC: out_dir / SPEC, PROGRAM: out_dir / PROGRAM}
    state_dict = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state_dict, paths[WEIGHTS])
    paths[SPEC].write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
    torch.export.save(export_program(model, example_input.detach().to("cpu")), paths[PROGRAM])
    return paths


def export_program(model: nn.Module, example_input: Tensor) -> torch.export.ExportedProgram:
    """A program that accepts any batch size >= 1.

    torch.export specializes a dimension whose example size is 0 or 1 (and then refuses to make it
    dynamic), so the example is always a batch of two; `min=1` states that batch size 1 is valid.
    """
    sample = example_input[:1]
    example = sample.expand(2, *sample.shape[1:]).contiguous()
    batch = Dim("batch", min=1)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
