"""Parquet datasets (the format of the Hugging Face Hub's datasets), read with pyarrow a batch of rows at a
time, only the columns needed, so memory holds one row group's values beside the result.

Columns: see `engine.plan.parquet_columns`. Rows are counted from 0, as `datasets` and pandas count them.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.data.arrays import invalid
from engine.plan.parquet_columns import (
    IMAGE_BYTES_FIELD,
    ParquetColumns,
    ParquetRejected,
    check_columns,
    shown_columns,
)


def row(index: int) -> str:
    return f"row {index}"


def rows_from(start: int) -> Callable[[int], str]:
    """Where the values of a batch that starts at row `start` are."""
    return lambda index: row(start + index)


@contextmanager
def parquet_errors(path: Path) -> Iterator[None]:
    """pyarrow's errors on a damaged file as `dataset_invalid`."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as error:
        raise invalid(f"{path.name} could not be read as a Parquet file: {error}") from None


def open_parquet(path: Path, needed: str) -> tuple[pq.ParquetFile, ParquetColumns]:
    """The file (its footer read) and which columns it has; `needed`: the column the model reads
    (`text` or `image`)."""
    file = parquet_file(path)
    try:
        columns = check_columns(file.schema_arrow)
    except ParquetRejected as rejected:
        raise invalid(f"{path.name}: {rejected}") from None
    if not getattr(columns, needed):
        raise invalid(
            f"{path.name} has no `{needed}` column, which a {needed} model reads: its columns are "
            f"{shown_columns(file.schema_arrow.names)}"
        )
    return file, columns


def parquet_file(path: Path) -> pq.ParquetFile:
    """The file, its footer read, which has rows."""
    if not path.is_file():
        raise invalid(f"dataset file {path.name} does not exist")
    with parquet_errors(path):
        file = pq.ParquetFile(path)
    if file.metadata.num_rows == 0:
        raise invalid(f"{path.name} has no rows: the dataset needs at least one sample")
    return file


def column_batches(
    file: pq.ParquetFile, path: Path, columns: list[str], batch_rows: int
) -> Iterator[tuple[int, dict[str, list]]]:
    """(the first row's index, column -> its values) of each batch of rows; a null value is refused.
    An image column's values are the image files' bytes."""
    start = 0
    with parquet_errors(path):
        for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
            yield start, {name: _values(batch.column(name), name, start) for name in columns}
            start += batch.num_rows


def _values(column: pa.Array, name: str, start: int) -> list:
    _refuse_nulls(column, start, f"has no `{name}` (it is null): every row needs one")
    if pa.types.is_struct(column.type):  # the `datasets` library's Image: {"bytes": ..., "path": ...}
        column = pc.struct_field(column, IMAGE_BYTES_FIELD)
        _refuse_nulls(
            column,
            start,
            "has no image bytes (a `path` only, which is not read here): store the images' bytes in the file",
        )
    return column.to_pylist()


def _refuse_nulls(column: pa.Array, start: int, problem: str) -> None:
    if column.null_count:
        raise invalid(f"{row(start + column.is_null().to_pylist().index(True))} {problem}")


def read_labels(file: pq.ParquetFile, path: Path) -> list[int | str] | None:
    """The `label` column (class ids or names), or None if every row's is null; labeled on every row or on
    none."""
    with parquet_errors(path):
        labels = file.read(columns=["label"]).column("label").to_pylist()
    first_null = next((index for index, label in enumerate(labels) if label is None), None)
    if first_null is None:
        return labels
    first_labeled = next((index for index, label in enumerate(labels) if label is not None), None)
    if first_labeled is None:
        return None
    raise invalid(
        f"{row(first_null)} has no `label` but {row(first_labeled)} has one: label every row, or none "
        "for an unlabeled dataset"
    )
