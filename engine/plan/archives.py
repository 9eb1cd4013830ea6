"""Bounds an uploaded archive must keep before what it holds is read: the size of a zip's central
directory (read from its end record, before `zipfile` reads the directory into memory) and the ratio of
the bytes it inflates to to its own (a bomb). The API checks an `.npz` dataset with them, and an archived
`save_pretrained` folder (`engine.plan.hf_archive`).
"""

import zipfile
import zlib
from typing import BinaryIO

# What a damaged zip archive raises once `zipfile.is_zipfile` has let it through.
# ValueError: a member offset that seeks before the file's start.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)

# `zipfile` reads the whole central directory into memory (some 10 objects per member), so its size is
# checked first; ~100k members still fit, and a torch.export archive has one per tensor.
MAX_ZIP_DIRECTORY_BYTES = 8 * 1024 * 1024
# A bomb declares far more than its compressed bytes: deflate reaches ~1000:1 on constant data, real
# arrays and weights well under 100:1 (numpy.savez and safetensors do not compress at all).
MAX_COMPRESSION_RATIO = 200
RATIO_CHECKED_ABOVE = 64 * 1024 * 1024  # small archives may compress as well as they like


class ArchiveRejected(ValueError):
    """The archive is damaged or hostile; the message says why."""


def damaged_zip(exc: Exception) -> ArchiveRejected:
    return ArchiveRejected(
        f"The zip archive is damaged or uses an unsupported feature ({exc}): upload it again"
    )


def check_zip_directory(f: BinaryIO) -> int:
    """The members the zip archive that `f` reads declares, once its central directory is known to be
    small enough to read."""
    try:
        end = zipfile._EndRecData(f)  # what `zipfile.is_zipfile` and `ZipFile` read first
    except OSError as exc:
        raise damaged_zip(exc) from None
    if end is None:
        raise damaged_zip(zipfile.BadZipFile("no end of central directory record"))
    if end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise ArchiveRejected(
            f"The zip archive's directory takes {end[zipfile._ECD_SIZE]} bytes "
            f"({end[zipfile._ECD_ENTRIES_TOTAL]} members), more than this server reads "
            f"({MAX_ZIP_DIRECTORY_BYTES} bytes)."
        )
    return end[zipfile._ECD_ENTRIES_TOTAL]


def inflates_like_a_bomb(inflated: int, compressed: int) -> bool:
    """Whether `compressed` bytes that inflate to `inflated` compress better than real data does."""
    return inflated > RATIO_CHECKED_ABOVE and inflated > MAX_COMPRESSION_RATIO * compressed
