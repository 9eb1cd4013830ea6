"""What `benchmarks.hf` measures outside the service: a `save_pretrained` folder loaded as its user loads it
(transformers' Auto classes with the folder's own tokenizer or image processor, no project code), its test
accuracy, parameters and milliseconds per sample; and the peak memory of loading an `hf` teacher as the
worker does, in a child process (`benchmarks.hf_load_memory`)."""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from benchmarks.common import ROOT

LATENCY_BATCHES = (1, 32)
LATENCY_SECONDS = 1.0  # of repeated calls per model and batch size, after a warm-up call
EVALUATION_BATCH = 256


@torch.inference_mode()
def text_scores(folder: Path, texts: list[str], labels: list[int], max_length: int) -> dict:
    """Accuracy on the texts (cut to `max_length` tokens, as the jobs read them), parameters, and ms per
    sample at each of LATENCY_BATCHES (the first texts, padded to the longest)."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def encoded(batch: list[str]) -> dict:
        return tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    predictions = torch.cat([
        model(**encoded(texts[start : start + EVALUATION_BATCH])).logits.argmax(1)
        for start in range(0, len(texts), EVALUATION_BATCH)
    ])  # fmt: skip
    latency = {
        f"batch_{size}": ms_per_sample(lambda inputs: model(**inputs), encoded(texts[:size]), size)
        for size in LATENCY_BATCHES
    }
    return scores(model, predictions, labels, latency)


@torch.inference_mode()
def image_scores(folder: Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy on uint8 images [N, 1, H, W], each given to the folder's image processor as a grayscale PIL
    image, parameters, and ms per sample at each of LATENCY_BATCHES (model only, processed images)."""
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    pixels = torch.cat([
        processor([Image.fromarray(image[0]) for image in images[start : start + EVALUATION_BATCH]],
                  return_tensors="pt")["pixel_values"]
        for start in range(0, len(images), EVALUATION_BATCH)
    ])  # fmt: skip
    predictions = torch.cat(
        [model(pixel_values=batch).logits.argmax(1) for batch in pixels.split(EVALUATION_BATCH)]
    )
    latency = {
        f"batch_{size}": ms_per_sample(lambda batch: model(pixel_values=batch), pixels[:size], size)
        for size in LATENCY_BATCHES
    }
    return scores(model, predictions, labels, latency)


def scores(model, predictions: torch.Tensor, labels, latency: dict[str, float]) -> dict:
    correct = (predictions == torch.as_tensor(labels)).float().mean().item()
    return {"accuracy": round(correct, 4), "parameters": model.num_parameters(), "latency_ms": latency}


def ms_per_sample(run: Callable[[Any], object], batch: Any, size: int) -> float:
    """`run(batch)` of `size` samples: the fastest of repeated calls over LATENCY_SECONDS (at least 5), after
    a first one, per sample. The fastest, not the median: on a machine that other work shares, the median
    measures that work as much as the model."""
    run(batch)
    seconds, deadline = [], time.perf_counter() + LATENCY_SECONDS
    while len(seconds) < 5 or time.perf_counter() < deadline:
        started = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - started)
    return round(1000 * min(seconds) / size, 3)


def teacher_load_memory(archive: Path, architecture: dict) -> dict:
    """`benchmarks.hf_load_memory`'s figures for the archive and the teacher spec the job resolved."""
    ran = subprocess.run(
        [sys.executable, "-m", "benchmarks.hf_load_memory", str(archive), json.dumps(architecture)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return json.loads(ran.stdout.splitlines()[-1])
