"""A transformers model folder (what `save_pretrained` writes) as one zip: archived on the user's machine
for upload as an `hf` teacher (`archived_model_folder`), and unpacked after download (`unpack_model_folder`:
a job's `student.hf.zip`), so that `from_pretrained` loads it.

The archive holds what the service unpacks for `from_pretrained` and nothing else (the names below are
those of `engine.plan.hf_archive`, which a test keeps in step): the config, the safetensors weights, the
tokenizer's files and the image preprocessor's config. Code (`*.py`), `training_args.bin`, optimizer
and scheduler state, `checkpoint-*/` and other subfolders stay behind. Pickled weights are converted to
safetensors here first (`distill_client.convert`): the service never unpickles.
"""

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distill_client.convert import (
    WEIGHTS,
    WEIGHTS_INDEX,
    folder_weights_as_safetensors,
    index_shards,
    pickled_folder_weights,
)
from distill_client.errors import DistillError

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
GENERATION_CONFIG = "generation_config.json"  # a language model's
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
SENTENCEPIECE_SUFFIX = ".model"  # spiece.model, sentencepiece.bpe.model, tokenizer.model
STUDENT_FOLDER = "student.hf.zip"  # the job's artifact: the student as a save_pretrained folder
# The job's artifacts that are folders, unpacked after download beside their zips: each with the file that
# makes it one (`from_pretrained` and peft's `PeftModel.from_pretrained` load these).
FOLDER_ARTIFACTS = {STUDENT_FOLDER: CONFIG, "student.lora.zip": "adapter_config.json"}
READ_CHUNK_BYTES = 1024 * 1024

OnConverted = Callable[[list[str], list[str]], None]


class ModelFolderError(DistillError):
    """The folder is no model folder the service takes, or the zip is no model folder to unpack."""


@contextmanager
def archived_model_folder(folder: Path, on_converted: OnConverted | None = None) -> Iterator[Path]:
    """`<folder name>.zip` in a temporary folder: the files of the `save_pretrained` folder that
    `from_pretrained` reads, at the zip's top. Pickled weights (with no safetensors ones) are converted
    first, and `on_converted(pickled names, safetensors names)` is told which."""
    folder = folder.resolve()
    if not (folder / CONFIG).is_file():
        raise ModelFolderError(
            f"{folder} holds no {CONFIG}: upload the folder that `model.save_pretrained(folder)` wrote"
        )
    with tempfile.TemporaryDirectory(prefix="distill-upload-") as workspace:
        archive = Path(workspace) / f"{folder.name}.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for name in [CONFIG, *_loaded_alongside(folder)]:
                _add(zipped, folder / name, name)
            weights = _safetensors_weights(folder)
            if weights is not None:
                for name in weights:
                    _add(zipped, folder / name, name)
            else:
                _add_converted(zipped, folder, Path(workspace), on_converted)
        yield archive


def _loaded_alongside(folder: Path) -> list[str]:
    """The tokenizer's files and the preprocessor's or generation config, where the folder has them."""
    return sorted(
        path.name
        for path in folder.iterdir()
        if path.is_file()
        and (
            path.name in (*TOKENIZER_FILES, PREPROCESSOR, GENERATION_CONFIG)
            or path.name.endswith(SENTENCEPIECE_SUFFIX)
        )
    )


def _safetensors_weights(folder: Path) -> list[str] | None:
    """`model.safetensors`, or the index and the shards it names; None where the folder has neither."""
    if (folder / WEIGHTS).is_file():
        return [WEIGHTS]
    if (folder / WEIGHTS_INDEX).is_file():
        return [WEIGHTS_INDEX, *index_shards(folder / WEIGHTS_INDEX)]
    return None


def _add_converted(
    zipped: zipfile.ZipFile, folder: Path, workspace: Path, on_converted: OnConverted | None
) -> None:
    pickled = pickled_folder_weights(folder)
    if pickled is None:
        raise ModelFolderError(
            f"{folder} holds no weights: {WEIGHTS} (or {WEIGHTS_INDEX} and its shards), or pickled ones "
            "to convert (pytorch_model.bin, or pytorch_model.bin.index.json and its shards)"
        )
    converted = []
    for name, path in folder_weights_as_safetensors(folder, workspace):
        _add(zipped, path, name)
        path.unlink()  # one converted shard on disk at a time, besides the archive
        converted.append(name)
    if on_converted:
        on_converted(pickled, converted)


def _add(zipped: zipfile.ZipFile, path: Path, name: str) -> None:
    """Safetensors weights stored as they are (they do not compress), JSON and text deflated."""
    compression = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
    zipped.write(path, name, compress_type=compression)  # a link is archived as the file it points to


def unpack_model_folder(archive: Path, destination: Path, *, marker: str = CONFIG) -> Path:
    """Unpack the zip of a model folder (a job's `student.hf.zip`; `marker`: the file it must hold) into the
    folder `destination`, which it replaces; returns `destination`, which `from_pretrained` loads. Refuses
    members with absolute paths, `..`, links or anything but files and folders, members holding other bytes
    than they declare, and more declared bytes than the disk has free; a zip whose files all lie in one folder
    is unpacked from inside it. A refused zip leaves `destination` as it was."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        _unpack(archive, staging, marker)
    except BaseException:
        shutil.rmtree(staging)
        raise
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    staging.replace(destination)
    return destination


def _unpack(archive: Path, folder: Path, marker: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [info for info in zipped.infolist() if not info.is_dir()]
            files = {_checked_name(info): info for info in members}
            if len(files) < len(members):
                raise ModelFolderError(f"{archive} holds a file twice: refused")
            root = _common_folder(list(files))
            if root + marker not in files:
                raise ModelFolderError(f"{archive} holds no {marker}: it is no model folder")
            declared, free = sum(i.file_size for i in members), shutil.disk_usage(folder).free
            if declared > free:
                raise ModelFolderError(f"{archive} unpacks to {declared} bytes, more than the {free} free")
            for name, info in files.items():
                _extract(zipped, info, folder / name.removeprefix(root))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelFolderError(f"{archive} is no readable zip archive ({exc})") from None


def _checked_name(info: zipfile.ZipInfo) -> str:
    """The member's name without empty or "." parts; refused where it could land outside the folder."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ModelFolderError(f"{name!r} is a link: a model folder is unpacked without links")
    if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
        raise ModelFolderError(f"{name!r} is no regular file: refused")
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise ModelFolderError(f"{name!r} is an absolute path or holds a backslash: refused")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ModelFolderError(f"{name!r} leads out of the folder (..): refused")
    if not parts:
        raise ModelFolderError(f"{name!r} names no file: refused")
    return "/".join(parts)


def _common_folder(names: list[str]) -> str:
    """The one folder every file lies in ("student/"), else "" (the files are at the top)."""
    tops = {name.split("/", 1)[0] + "/" for name in names}
    return tops.pop() if len(tops) == 1 and all("/" in name for name in names) else ""


def _extract(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write the member to `target`: zipfile reads no more bytes than the member declares, and refuses
    (by its CRC) one that holds other bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipped.open(info) as member, target.open("xb") as out:
        shutil.copyfileobj(member, out, READ_CHUNK_BYTES)
