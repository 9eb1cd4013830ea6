"""Images for a Hugging Face model: [N, C, H, W] floats in [0, 1] at its input shape, from .npz arrays or
Parquet of PNG/JPEG files (plain bytes or the `datasets` library's Image struct); bombs and damage refused."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from engine.data.hf_datasets import load_hf_dataset
from engine.data.images import MAX_IMAGE_PIXELS
from engine.plan.errors import JobFailed
from engine.plan.specs import HFSpec

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # `datasets`' Image feature


def image_spec(shape=(3, 4, 4)) -> HFSpec:
    config = {"model_type": "vit", "id2label": {"0": "cat", "1": "dog"}}
    return HFSpec(config=config, num_classes=2, input_shape=list(shape))


def encoded(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """An image file of `pixels` [H, W] or [H, W, 3] (uint8)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def solid(color: tuple[int, int, int], size: int = 8) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header declares a `width` x `height` image: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_parquet(directory: Path, images: list, labels: list | None = None, image_type=IMAGE_TYPE) -> Path:
    path = directory / "images.parquet"
    columns = {"image": pa.array(images, image_type)}
    pq.write_table(pa.table(columns | ({} if labels is None else {"label": labels})), path)
    return path


def image_failure(path: Path, spec: HFSpec | None = None) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        load_hf_dataset(path, path.suffix[1:], spec or image_spec(), None, param="dataset.validation_file_id")
    assert caught.value.code == "dataset_invalid" and caught.value.param == "dataset.validation_file_id"
    return caught.value


def test_parquet_images_are_decoded_resized_and_scaled(tmp_path):
    exact = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    images = [
        {"bytes": encoded(exact), "path": "exact.png"},
        {"bytes": encoded(solid((255, 0, 128))), "path": None},  # 8 x 8: resized
        {"bytes": encoded(solid((0, 255, 0), size=16), "JPEG"), "path": "green.jpg"},
    ]
    dataset = load_hf_dataset(
        write_parquet(tmp_path, images, ["dog", "cat", "dog"]), "parquet", image_spec(), None
    )
    assert dataset.x.dtype == torch.float32 and dataset.x.shape == (3, 3, 4, 4)
    assert torch.equal(dataset.x[0], torch.from_numpy(exact).permute(2, 0, 1) / 255)
    assert torch.allclose(dataset.x[1], torch.tensor([1.0, 0.0, 128 / 255]).view(3, 1, 1).expand(3, 4, 4))
    assert dataset.x[2, 1].min() > 0.9 and dataset.x[2, [0, 2]].max() < 0.1  # JPEG: green, nearly exact
    assert dataset.y.tolist() == [1, 0, 1]


def test_plain_binary_images_and_channel_conversion(tmp_path):
    gray = encoded(np.full((4, 4), 200, np.uint8))
    path = write_parquet(tmp_path, [gray, encoded(solid((255, 0, 0), size=4))], image_type=pa.binary())
    rgb = load_hf_dataset(path, "parquet", image_spec(), None)
    assert rgb.y is None
    assert torch.allclose(rgb.x[0], torch.full((3, 4, 4), 200 / 255))  # grayscale repeated
    one_channel = load_hf_dataset(path, "parquet", image_spec((1, 2, 2)), None).x
    assert one_channel.shape == (2, 1, 2, 2)
    assert torch.allclose(one_channel[1], torch.full((1, 2, 2), 76 / 255))  # red's luminance, as Pillow's L


@pytest.mark.parametrize(
    "width, height", [(9000, 9000), (100_000, 100_000)], ids=["beyond our limit", "beyond Pillow's"]
)
def test_a_decompression_bomb_is_refused_by_its_header(tmp_path, width, height):
    assert width * height > MAX_IMAGE_PIXELS
    images = [encoded(solid((0, 0, 0))), png_declaring(width, height)]
    path = write_parquet(tmp_path, images, ["cat", "dog"], image_type=pa.binary())
    assert "the image of row 1 is too large to decode" in image_failure(path).message


BAD_IMAGES = {
    "not an image": ({"bytes": b"not an image", "path": None}, "the image of row 1 is not a PNG or JPEG"),
    "truncated": ({"bytes": encoded(solid((1, 2, 3)))[:45], "path": None}, "row 1 could not be decoded"),
    "a path only": ({"bytes": None, "path": "/data/cat.png"}, "row 1 has no image bytes"),
    "null": (None, "row 1 has no `image`"),
}


@pytest.mark.parametrize("image, words", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_a_bad_image_names_its_row(tmp_path, image, words):
    path = write_parquet(tmp_path, [{"bytes": encoded(solid((0, 0, 0))), "path": None}, image])
    assert words in image_failure(path).message


def test_an_unknown_image_label_names_its_row(tmp_path):
    path = write_parquet(tmp_path, [encoded(solid((0, 0, 0)))] * 2, ["cat", "bird"], image_type=pa.binary())
    message = image_failure(path).message
    assert "'bird' of row 1" in message and "'cat', 'dog'" in message


def save_npz(directory: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    path = directory / "images.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    return path


def test_npz_uint8_images_are_scaled_repeated_and_resized(tmp_path):
    x = np.full((2, 1, 8, 8), 51, np.uint8)
    dataset = load_hf_dataset(save_npz(tmp_path, x, np.array([1, 0])), "npz", image_spec(), None)
    assert dataset.x.shape == (2, 3, 4, 4) and torch.allclose(dataset.x, torch.full((2, 3, 4, 4), 0.2))
    assert dataset.y.tolist() == [1, 0]


def test_npz_float_images_are_kept_and_rgb_becomes_luminance(tmp_path):
    x = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    assert torch.equal(
        load_hf_dataset(save_npz(tmp_path, x), "npz", image_spec(), None).x, torch.from_numpy(x)
    )
    gray = load_hf_dataset(save_npz(tmp_path, x), "npz", image_spec((1, 4, 4)), None).x
    assert torch.allclose(gray[:, 0], torch.from_numpy(0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]))


@pytest.mark.parametrize(
    "x, y, words",
    [
        (np.zeros((2, 3, 4), np.uint8), None, "[samples, channels, height, width]"),
        (np.zeros((2, 3, 4, 4), np.int64), None, "uint8 (0 to 255) or floats"),
        (np.zeros((2, 4, 4, 4), np.uint8), None, "images of 4 channels"),
        (np.zeros((2, 3, 4, 4), np.uint8), np.array([0, 2]), "the label 2 of sample 1"),
    ],
    ids=["3-D", "int64 pixels", "RGBA", "label out of range"],
)
def test_bad_npz_images(tmp_path, x, y, words):
    assert words in image_failure(save_npz(tmp_path, x, y)).message


def test_text_for_an_image_model_is_refused(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a cat"}\n')
    assert "reads npz or parquet datasets, not jsonl" in image_failure(path).message
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"text": ["a cat"], "label": ["cat"]}), text)
    assert "text.parquet has no `image` column" in image_failure(text).message


def test_a_model_of_other_than_1_or_3_channels_is_refused(tmp_path):
    path = save_npz(tmp_path, np.zeros((2, 3, 4, 4), np.uint8))
    assert "the model takes images of 4 channels" in image_failure(path, image_spec((4, 4, 4))).message
