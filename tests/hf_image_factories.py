"""Images for Hugging Face image classifiers, made in the test: small coloured images whose label is their
brightest channel, as .npz arrays or Parquet of PNG files with label names, and a ViT teacher fine-tuned on
them, saved as `save_pretrained` saves it with its image processor's config: a folder as a user uploads
it."""

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

COLOURS = ["red", "green", "blue"]  # the label names: which channel is brightest
IMAGE_SIZE = 8
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # the teacher's image processor's


def coloured_images(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """uint8 images [count, 3, IMAGE_SIZE, IMAGE_SIZE] of noise with one channel brighter, and the name of
    that channel's colour, in turn."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, (count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels = [COLOURS[index % len(COLOURS)] for index in range(count)]
    for image, label in zip(pixels, labels, strict=True):
        image[COLOURS.index(label)] += rng.integers(80, 136, dtype=np.uint8)
    return pixels, labels


def write_image_npz(path: Path, pixels: np.ndarray, labels: list[str]) -> Path:
    """`x`: the uint8 images; `y`: the class ids of their labels."""
    np.savez(path, x=pixels, y=np.array([COLOURS.index(label) for label in labels]))
    return path


def write_image_parquet(path: Path, pixels: np.ndarray, labels: list[str]) -> Path:
    """An `image` column of PNG files and a `label` column of names."""
    pngs = [png(image) for image in pixels]
    pq.write_table(pa.table({"image": pa.array(pngs, pa.binary()), "label": labels}), path)
    return path


def png(image: np.ndarray) -> bytes:
    """One [3, H, W] uint8 image as a PNG file."""
    buffer = io.BytesIO()
    pil_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def pil_image(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))


def vit_teacher_folder(directory: Path, pixels: np.ndarray, labels: list[str]) -> Path:
    """A 2-layer ViT classifier of the colours fine-tuned on the images, saved with its image processor's
    config (8 x 8 pixels, normalised with MEAN and STD)."""
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
        id2label=dict(enumerate(COLOURS)),
        label2id={name: index for index, name in enumerate(COLOURS)},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    inputs = (torch.from_numpy(pixels).float() / 255 - mean) / std
    targets = torch.tensor([COLOURS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(60):
        optimizer.zero_grad()
        model(pixel_values=inputs, labels=targets).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ViTImageProcessorPil(size=size, image_mean=MEAN, image_std=STD).save_pretrained(directory)
    return directory
