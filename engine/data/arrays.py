"""Datasets: `.npz` archives with an `x` array of samples and an optional `y` array of class indices.

`x` is loaded as float32 features, or with `token_ids=True` as int64 token ids (0 = padding).

Everything lives in memory as tensors, so batches are index slices rather than a DataLoader.
"""

import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypeVar

import numpy as np
import torch
from torch import Tensor

from engine.plan.errors import JobFailed

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
INTEGER_KINDS = "iu"
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class ArrayDataset:
    x: Tensor  # float32 [N, ...], or int64 token ids [N, L]
    y: Tensor | None  # int64, [N]

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def labeled(self) -> bool:
        return self.y is not None

    def subset(self, indices: Tensor) -> "ArrayDataset":
        return ArrayDataset(*self.take(indices))

    def take(self, index: slice | Tensor) -> tuple[Tensor, Tensor | None]:
        """The samples at `index` (positions, on any device), and their labels."""
        if isinstance(index, Tensor):
            index = index.to(self.x.device)
        return self.x[index], None if self.y is None else self.y[index]


def invalid(message: str) -> JobFailed:
    return JobFailed("dataset_invalid", message)


def load_npz(path: Path, token_ids: bool = False) -> ArrayDataset:
    """Load and check a dataset; every problem is a `dataset_invalid` error that says what to fix.

    `token_ids`: `x` holds token ids for a transformer ([N, L] non-negative integers, kept int64)
    rather than features (converted to float32).
    """
    x, y = read_npz(path)
    if token_ids:
        check_token_ids(x)
    return ArrayDataset(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64 if token_ids else np.float32)),
        y=None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The checked `x` and `y` arrays (None: unlabeled) of an .npz archive, in the dtypes it stores."""
    arrays = _read_arrays(path)
    x = _check_x(arrays.get("x"), path)
    y = arrays.get("y")
    return x, None if y is None else _check_y(y, len(x))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The `x` and `y` arrays of the archive, never unpickling anything."""
    if not path.is_file():
        raise invalid(f"dataset file {path.name} does not exist")
    if not zipfile.is_zipfile(path):
        raise invalid(
            f"{path.name} is not an .npz archive: save the dataset with numpy.savez(path, x=..., y=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: _read_array(archive, name) for name in ("x", "y") if name in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise invalid(f"{path.name} could not be read as an .npz archive: {error}") from None


def _read_array(archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as error:
        # With allow_pickle=False numpy refuses object arrays instead of unpickling them.
        if "allow_pickle" not in str(error):
            raise
        raise invalid(
            f"array '{name}' holds Python objects (dtype=object), which are not loaded for safety: "
            "save it as a numeric numpy array"
        ) from None


def _check_x(x: np.ndarray | None, path: Path) -> np.ndarray:
    if x is None:
        raise invalid(
            f"{path.name} has no array named 'x': save the samples with numpy.savez(path, x=..., y=...)"
        )
    if x.dtype.kind not in NUMERIC_KINDS:
        raise invalid(f"array 'x' has dtype {x.dtype}; it must be numeric (floats or integers)")
    if x.ndim < 2:
        raise invalid(
            f"array 'x' has shape {list(x.shape)}; it must be [samples, ...features], "
            "with at least 2 dimensions"
        )
    if len(x) == 0:
        raise invalid("array 'x' is empty: the dataset needs at least one sample")
    if x.dtype.kind == "f":
        non_finite = int(x.size - np.count_nonzero(np.isfinite(x)))
        if non_finite:
            raise invalid(f"array 'x' has {non_finite:,} NaN or infinite values; clean or impute them first")
        beyond = int(np.count_nonzero(np.abs(x) > FLOAT32_MAX)) if x.dtype.itemsize > 4 else 0
        if beyond:
            raise invalid(
                f"array 'x' has {beyond:,} values beyond float32's range (±{FLOAT32_MAX:.3g}), in which the "
                "models compute: rescale the data (standardize each feature) first"
            )
    return x


def check_token_ids(x: np.ndarray) -> None:
    if x.dtype.kind not in INTEGER_KINDS:
        raise invalid(
            f"array 'x' has dtype {x.dtype}; token ids must be integers (e.g. x.astype(numpy.int64))"
        )
    if x.ndim != 2:
        raise invalid(f"array 'x' has shape {list(x.shape)}; token ids must be [samples, sequence_length]")
    if x.min() < 0:
        raise invalid(f"array 'x' has negative token ids (min {int(x.min())}); ids must be >= 0, 0 = padding")
    if x.max() > np.iinfo(np.int64).max:  # only a uint64 array can hold these
        raise invalid(f"array 'x' has token ids up to {int(x.max())}, beyond the int64 range")


def _check_y(y: np.ndarray, num_samples: int) -> np.ndarray:
    if y.ndim != 1:
        raise invalid(f"array 'y' has shape {list(y.shape)}; it must be 1-D: one class index per sample")
    if y.dtype.kind not in INTEGER_KINDS:
        raise invalid(
            f"array 'y' has dtype {y.dtype}; it must hold integer class indices (e.g. y.astype(numpy.int64))"
        )
    if len(y) != num_samples:
        raise invalid(f"array 'y' has {len(y):,} labels but 'x' has {num_samples:,} samples; they must match")
    return y


class Samples(Protocol):
    """A dataset whose samples are taken by position: an `ArrayDataset`, a language model's blocks."""

    def __len__(self) -> int: ...

    def subset(self, indices: Tensor) -> Self: ...


AnySamples = TypeVar("AnySamples", bound=Samples)


def split_holdout(dataset: AnySamples, fraction: float, seed: int) -> tuple[AnySamples, AnySamples]:
    """A seeded random split into (train, validation), with at least one sample on each side."""
    n = len(dataset)
    if n < 2:
        raise invalid(f"the dataset has {n} sample; at least 2 are needed to hold out a validation set")
    num_validation = min(max(round(n * fraction), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[num_validation:]), dataset.subset(order[:num_validation])


def batch_bounds(num_samples: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch. A lone trailing sample joins the previous batch, because
    BatchNorm cannot normalize a batch of one in training mode."""
    bounds = [(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]
    if batch_size > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], num_samples)]
    return bounds


def count_batches(num_samples: int, batch_size: int) -> int:
    return len(batch_bounds(num_samples, batch_size))


def batch_indices(
    num_samples: int, batch_size: int, order: Tensor | None = None, first: int = 0
) -> Iterator[slice | Tensor]:
    """The positions of each batch's samples: slices of `order` (default: as stored), from batch number
    `first` on."""
    for start, end in batch_bounds(num_samples, batch_size)[first:]:
        yield slice(start, end) if order is None else order[start:end]


def iterate_batches(
    dataset: ArrayDataset, batch_size: int, order: Tensor | None = None, first: int = 0
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(x, y) batches, the samples taken in `order` (default: as stored), from batch number `first` on;
    y is None for an unlabeled dataset."""
    for index in batch_indices(len(dataset), batch_size, order, first):
        yield dataset.take(index)


def smallest_batch(num_samples: int, batch_size: int) -> int:
    return min(end - start for start, end in batch_bounds(num_samples, batch_size))
