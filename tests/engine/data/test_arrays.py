"""Loading `.npz` datasets: every invalid file is a `dataset_invalid` error that names the problem."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.arrays import ArrayDataset, batch_bounds, iterate_batches, load_npz, split_holdout
from engine.plan.errors import JobFailed


def saved(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def assert_invalid(path: Path, *fragments: str) -> None:
    with pytest.raises(JobFailed) as caught:
        load_npz(path)
    assert caught.value.code == "dataset_invalid"
    for fragment in fragments:
        assert fragment in caught.value.message


def test_valid_dataset_is_converted_to_float32_and_int64(tmp_path):
    x = np.arange(24, dtype=np.int16).reshape(3, 2, 4)
    dataset = load_npz(saved(tmp_path, x=x, y=np.array([0, 2, 1], dtype=np.uint8), extra=np.zeros(2)))
    assert dataset.x.dtype == torch.float32 and dataset.x.shape == (3, 2, 4)
    assert dataset.y.dtype == torch.int64 and dataset.y.tolist() == [0, 2, 1]
    assert len(dataset) == 3 and dataset.labeled


def test_labels_are_optional(tmp_path):
    dataset = load_npz(saved(tmp_path, x=np.ones((2, 3), dtype=np.float64)))
    assert dataset.y is None and not dataset.labeled


def test_big_endian_arrays_load(tmp_path):
    dataset = load_npz(saved(tmp_path, x=np.ones((2, 3), dtype=">f8"), y=np.array([1, 0], dtype=">i4")))
    assert dataset.x.sum().item() == 6 and dataset.y.tolist() == [1, 0]


def test_missing_file(tmp_path):
    assert_invalid(tmp_path / "nope.npz", "does not exist")


def test_random_bytes_are_not_an_archive(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"this is not a zip file at all")
    assert_invalid(path, "not an .npz archive")


def test_a_plain_npy_file_is_not_an_archive(tmp_path):
    path = tmp_path / "data.npz"
    with path.open("wb") as file:
        np.save(file, np.ones((2, 2)))
    assert_invalid(path, "not an .npz archive")


def test_truncated_archive(tmp_path):
    path = saved(tmp_path, x=np.ones((100, 10)))
    path.write_bytes(path.read_bytes()[:-300])
    assert_invalid(path, "data.npz")


class Tripwire:
    """Unpickling this creates a file: proof that the loader ran pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    x = np.empty((2, 1), dtype=object)
    x[0, 0], x[1, 0] = Tripwire(marker), Tripwire(marker)
    pickle.dumps(x)  # the tripwire itself works: it pickles, and loading would touch the marker
    assert_invalid(saved(tmp_path, x=x), "array 'x' holds Python objects (dtype=object)")
    assert_invalid(saved(tmp_path, x=np.ones((2, 1)), y=x[:, 0]), "array 'y' holds Python objects")
    assert not marker.exists()


def test_missing_x(tmp_path):
    assert_invalid(saved(tmp_path, features=np.ones((2, 2))), "no array named 'x'")


@pytest.mark.parametrize(
    "x", [np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2), dtype=np.complex64)], ids=["strings", "complex"]
)
def test_non_numeric_x(tmp_path, x):
    assert_invalid(saved(tmp_path, x=x), "array 'x' has dtype", "must be numeric")


def test_one_dimensional_x(tmp_path):
    assert_invalid(saved(tmp_path, x=np.ones(5)), "array 'x' has shape [5]", "at least 2 dimensions")


def test_empty_x(tmp_path):
    assert_invalid(saved(tmp_path, x=np.ones((0, 3))), "array 'x' is empty")


def test_non_finite_values_are_counted(tmp_path):
    x = np.ones((4, 3), dtype=np.float32)
    x[0, 0], x[1, 2], x[3, 1] = np.nan, np.inf, -np.inf
    assert_invalid(saved(tmp_path, x=x), "array 'x' has 3 NaN or infinite values")


def test_two_dimensional_y(tmp_path):
    assert_invalid(
        saved(tmp_path, x=np.ones((2, 3)), y=np.zeros((2, 1), dtype=np.int64)), "'y' has shape [2, 1]"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.bool_])
def test_non_integer_y(tmp_path, dtype):
    path = saved(tmp_path, x=np.ones((2, 3)), y=np.zeros(2, dtype=dtype))
    assert_invalid(path, "array 'y' has dtype", "integer class indices")


def test_label_count_must_match_samples(tmp_path):
    path = saved(tmp_path, x=np.ones((3, 2)), y=np.zeros(2, dtype=np.int64))
    assert_invalid(path, "'y' has 2 labels but 'x' has 3 samples")


def dataset(n: int) -> ArrayDataset:
    return ArrayDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


def test_split_holdout_is_a_seeded_partition():
    train, validation = split_holdout(dataset(100), 0.2, seed=7)
    assert (len(train), len(validation)) == (80, 20)
    assert sorted(train.y.tolist() + validation.y.tolist()) == list(range(100))
    assert torch.equal(train.x.squeeze(1).long(), train.y)  # x and y stay paired
    again, _ = split_holdout(dataset(100), 0.2, seed=7)
    other, _ = split_holdout(dataset(100), 0.2, seed=8)
    assert torch.equal(train.y, again.y) and not torch.equal(train.y, other.y)


@pytest.mark.parametrize(("n", "fraction"), [(2, 0.5), (2, 0.01), (3, 0.5), (10, 0.01)])
def test_split_holdout_keeps_a_sample_on_each_side(n, fraction):
    train, validation = split_holdout(dataset(n), fraction, seed=0)
    assert len(train) >= 1 and len(validation) >= 1 and len(train) + len(validation) == n


def test_split_holdout_needs_two_samples():
    with pytest.raises(JobFailed, match="at least 2"):
        split_holdout(dataset(1), 0.1, seed=0)


def test_batches_cover_every_sample_once():
    data = dataset(10)
    batches = list(iterate_batches(data, 4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


def test_batches_follow_an_order_from_a_given_batch_on():
    order = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert torch.cat([y for _, y in iterate_batches(dataset(10), 3, order)]).tolist() == order.tolist()
    assert [y.tolist() for _, y in iterate_batches(dataset(10), 3, order, first=2)] == [[3, 2, 1, 0]]


def test_a_lone_trailing_sample_joins_the_previous_batch():
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(1, 4) == [(0, 1)]
    assert batch_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]


def test_unlabeled_batches_have_no_labels():
    data = ArrayDataset(torch.zeros(5, 2), None)
    assert all(y is None for _, y in iterate_batches(data, 2))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_corrupted_archive_member(tmp_path, save):
    path = tmp_path / "data.npz"
    save(path, x=np.random.default_rng(0).random((100, 10)))
    content = bytearray(path.read_bytes())
    content[200:260] = bytes(byte ^ 0xFF for byte in content[200:260])
    path.write_bytes(bytes(content))
    assert_invalid(path, "could not be read as an .npz archive")
