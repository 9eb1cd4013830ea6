"""The rules of a Parquet dataset's columns: a `text` column of strings (and `text_pair` for pairs of
texts), or an `image` column of encoded images (PNG, JPEG: bytes, or the `datasets` library's Image struct
`{"bytes": ..., "path": ...}`), and an optional `label` column of class ids or label names. Other columns
are ignored.

The upload check applies them to a file's schema (its footer), the engine's reader again before it reads
a row; a rule broken is a `ParquetRejected` whose message names the columns and says what is needed.
"""

from typing import NamedTuple

import pyarrow as pa

IMAGE_BYTES_FIELD = "bytes"  # the field of the `datasets` library's Image struct that holds the file
SHOWN_COLUMNS = 20
NEEDED = (
    "a Parquet dataset needs a `text` column (strings; `text_pair` too for pairs of texts) or an `image` "
    "column (PNG or JPEG bytes, or the `datasets` library's Image feature), and optionally `label` "
    "(integer class ids or label names)"
)


class ParquetRejected(Exception):
    """The columns are no dataset; the message says which columns and what is needed."""


class ParquetColumns(NamedTuple):
    """Which of the columns read a schema has."""

    text: bool
    text_pair: bool
    image: bool
    label: bool


def check_columns(schema: pa.Schema) -> ParquetColumns:
    """The columns of `schema` that are read, each of a type they may have."""
    types = {field.name: field.type for field in schema}
    rules = {"text": is_string, "text_pair": is_string, "image": _is_image, "label": _is_label}
    for name, rule in rules.items():
        if name in types and not rule(types[name]):
            raise ParquetRejected(f"Column `{name}` holds {types[name]}: {NEEDED}")
    columns = ParquetColumns(**{name: name in types for name in rules})
    if not (columns.text or columns.image):
        raise ParquetRejected(f"The file's columns are {shown_columns(schema.names)}: {NEEDED}")
    if columns.text_pair and not columns.text:
        raise ParquetRejected(f"The file has `text_pair` but no `text` column: {NEEDED}")
    return columns


def shown_columns(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(f"`{name}`" for name in names[:SHOWN_COLUMNS])
    more = len(names) - SHOWN_COLUMNS
    return shown + (f" and {more} more" if more > 0 else "")


def is_string(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _is_binary(data_type: pa.DataType) -> bool:
    return pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type)


def _is_image(data_type: pa.DataType) -> bool:
    if pa.types.is_struct(data_type):
        index = data_type.get_field_index(IMAGE_BYTES_FIELD)
        return index >= 0 and _is_binary(data_type.field(index).type)
    return _is_binary(data_type)


def _is_label(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):  # pandas' categorical columns
        data_type = data_type.value_type
    return pa.types.is_integer(data_type) or is_string(data_type)
