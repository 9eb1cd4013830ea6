"""Random shifts and flips of image batches `[B, C, H, W]`, drawn from the job's seeded generator.

The same augmented batch goes to the teachers and the student, so the soft targets describe exactly
the images the student sees.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.plan.errors import JobFailed
from engine.plan.specs import Augmentation


def check_augmentation(config: Augmentation, sample_shape: list[int]) -> None:
    if (config.shift or config.flip) and len(sample_shape) != 3:
        raise JobFailed(
            "augmentation_unsupported",
            f"training.augmentation shifts and flips images [C, H, W], but the samples have shape "
            f"{sample_shape}: store images as [N, C, H, W] (an mlp student flattens them) or turn it off",
        )


def augment(x: Tensor, config: Augmentation, generator: torch.Generator) -> Tensor:
    if config.shift:
        x = random_shift(x, config.shift, generator)
    if config.flip:
        flipped = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flipped.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    return x


def random_shift(x: Tensor, pixels: int, generator: torch.Generator) -> Tensor:
    """Each image moved by its own (dy, dx) in [-pixels, pixels], the uncovered border zero."""
    batch, _channels, height, width = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, batch), generator=generator).to(x.device)
    rows = (dy.view(-1, 1) + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
    cols = (dx.view(-1, 1) + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
    images = torch.arange(batch, device=x.device).view(batch, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[images, channels, rows, cols]
