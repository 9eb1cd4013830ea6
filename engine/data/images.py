"""Images for a Hugging Face (`transformers`) model: float32 `[N, C, H, W]` with values in [0, 1] at the
model's `input_shape`, not normalised (the model normalises them itself).

Stored arrays (`.npz`) are scaled (uint8 by 1/255; floats kept as they are), their channels converted and
resized; encoded images (PNG, JPEG) are decoded with Pillow, converted to RGB or grayscale and resized
with bilinear resampling, as transformers' ViT image processor does.
"""

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from engine.data.arrays import invalid

# Decoding allocates width x height x channels bytes whatever the file's size: a decompression bomb
# declares a huge image in a few bytes. Far beyond any photo a classifier is trained on.
MAX_IMAGE_PIXELS = 8192 * 8192
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
PIL_MODES = {1: "L", 3: "RGB"}  # by the channels the model takes
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow converts RGB to L
ARRAY_CHUNK = 256  # images converted at once: bounds the memory beyond the result


def check_image_channels(shape: Sequence[int]) -> None:
    if shape[0] not in PIL_MODES:
        raise invalid(
            f"the model takes images of {shape[0]} channels ([C, H, W] = {list(shape)}); the images read "
            "here are grayscale (1 channel) or RGB (3 channels)"
        )


# --- encoded images ---------------------------------------------------------------------------


def decode_image(data: bytes, shape: Sequence[int], where: str) -> np.ndarray:
    """uint8 [C, H, W] from PNG or JPEG bytes (`shape`: the model's [C, H, W]; `where`: which image)."""
    channels, height, width = shape
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as error:  # Pillow's own limit, beyond ours
        raise _too_large(where, str(error)) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise invalid(f"the image of {where} is not a PNG or JPEG file Pillow can read: {error}") from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise _too_large(where, f"{image.width} x {image.height} pixels")
        try:
            image = image.convert(PIL_MODES[channels])
        except (OSError, ValueError, SyntaxError) as error:  # truncated or damaged pixel data
            raise invalid(f"the image of {where} could not be decoded: {error}") from None
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(height, width, channels).transpose(2, 0, 1)


def _too_large(where: str, size: str) -> Exception:
    return invalid(
        f"the image of {where} is too large to decode ({size}; at most {MAX_IMAGE_PIXELS:,} pixels): "
        "resize it first (a file that declares a huge image in a few bytes is a decompression bomb)"
    )


# --- arrays -----------------------------------------------------------------------------------


def model_images(x: np.ndarray, shape: Sequence[int]) -> Tensor:
    """float32 [N, *shape] from stored images [N, c, h, w] (uint8 or floats): channels 1 -> 3 repeated,
    3 -> 1 by luminance; resized bilinearly (with antialiasing) where the size differs."""
    check_image_array(x, shape)
    images = torch.empty((len(x), *shape), dtype=torch.float32)
    for start in range(0, len(x), ARRAY_CHUNK):
        chunk = torch.from_numpy(x[start : start + ARRAY_CHUNK]).float()
        if x.dtype == np.uint8:
            chunk /= 255
        chunk = _with_channels(chunk, shape[0])
        if chunk.shape[2:] != tuple(shape[1:]):
            chunk = F.interpolate(chunk, size=tuple(shape[1:]), mode="bilinear", antialias=True)
        images[start : start + len(chunk)] = chunk
    return images


def check_image_array(x: np.ndarray, shape: Sequence[int]) -> None:
    if x.ndim != 4:
        raise invalid(
            f"array 'x' has shape {list(x.shape)}; images must be [samples, channels, height, width]"
        )
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise invalid(
            f"array 'x' has dtype {x.dtype}; image pixels must be uint8 (0 to 255) or floats in [0, 1]"
        )
    if x.shape[1] != shape[0] and (x.shape[1], shape[0]) not in ((1, 3), (3, 1)):
        raise invalid(
            f"array 'x' holds images of {x.shape[1]} channels (shape {list(x.shape)}), but the model takes "
            f"{shape[0]}: store grayscale (1) or RGB (3) images as [N, C, H, W]"
        )


def _with_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    weights = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
