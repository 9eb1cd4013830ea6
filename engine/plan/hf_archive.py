"""A `transformers` model uploaded as one archive (.zip, .tar or .tar.gz) of the folder `save_pretrained`
wrote: what it holds, checked at upload (`inspect_hf_archive`), and the files a worker builds the model from,
unpacked with the same checks (`unpack_hf_archive`).

Torch-free and transformers-free, in bounded memory: a zip is read from its central directory, a tar member
by member in order (a .tar.gz is one compressed stream, read twice at most: once for the names, once for
the few files whose contents are checked). Nothing is unpickled and no code is run: pickled weights are
refused, and files other than the config, the safetensors weights, the tokenizer's (its chat template
included), the image preprocessor's and a language model's generation config are never unpacked
(`HFFolder.skipped`). Links, devices, paths that leave the folder, bombs
and anything past the server's `HFArchiveLimits` are refused with `HFArchiveRejected`.
"""

import gzip
import hashlib
import json
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict

from engine.plan.archives import (
    ZIP_ERRORS,
    ArchiveRejected,
    check_zip_directory,
    inflates_like_a_bomb,
)
from engine.plan.hf_models import (
    MAX_CONFIG_BYTES,
    REMOTE_CODE_KEYS,
    HFConfigRejected,
    HFTask,
    check_hf_config,
)
from engine.plan.safetensors_header import (
    READ_CHUNK_BYTES,
    SafetensorsRejected,
    read_exactly,
    read_safetensors_header,
)

ArchiveKind = Literal["zip", "tar", "tar.gz"]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
PREPROCESSOR = "preprocessor_config.json"
GENERATION_CONFIG = "generation_config.json"  # a language model's sampling defaults and special token ids
TOKENIZER_FILES = (
    "tokenizer.json",
    TOKENIZER_CONFIG,
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",  # the chat template of transformers 4.43 and later, beside tokenizer_config.json
    "chat_template.json",
)
SENTENCEPIECE_SUFFIX = ".model"  # spiece.model, sentencepiece.bpe.model, tokenizer.model
# Weights saved by torch.save: never unpickled here. (training_args.bin is a pickle too, of no weights.)
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TRAINING_ARGS = "training_args.bin"
DEFAULT_LABELS = 2  # transformers' `num_labels` where a config names none (save_pretrained then writes none)
# The JSON documents whose contents are checked, and the most bytes each may take. The index names one
# shard per tensor: some 100 bytes a tensor, so 16 MiB holds a model of 100k tensors.
DOCUMENT_BYTES = {
    CONFIG: MAX_CONFIG_BYTES,
    PREPROCESSOR: MAX_CONFIG_BYTES,
    TOKENIZER_CONFIG: MAX_CONFIG_BYTES,
    GENERATION_CONFIG: MAX_CONFIG_BYTES,
    WEIGHTS_INDEX: 16 * 1024 * 1024,
}
# The documents kept are stored as JSON in the database: real ones nest a few levels.
MAX_DOCUMENT_DEPTH = 64
# A tar stream: the most bytes `tarfile` may read at once (a member's header with its long name or pax
# records; members' data is read in chunks of this size), and of headers and padding in all.
MAX_TAR_READ = READ_CHUNK_BYTES
MAX_TAR_METADATA_BYTES = 64 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
TAR_ERRORS = (tarfile.TarError, *ZIP_ERRORS)  # gzip's errors are OSError, EOFError and zlib.error
PICKLE_HINT = (
    "this server never unpickles weights: save the model again with `model.save_pretrained(folder)` "
    "(transformers 4.35 and later write safetensors), or upload the folder with "
    "`distill files upload ./folder/`, which converts its weights to safetensors on your machine"
)
SAVE_HINT = "upload the folder that `model.save_pretrained(folder)` wrote, as a .zip, .tar or .tar.gz"


class HFArchiveRejected(ValueError):
    """The archive is no model folder this server takes; the message says why and what to do."""


class HFConfigMissing(HFArchiveRejected):
    """The archive holds no config.json: it is no `save_pretrained` folder at all."""


@dataclass(frozen=True)
class HFArchiveLimits:
    max_members: int  # entries of the archive, folders included
    max_member_bytes: int  # declared bytes of any one file
    max_unpacked_bytes: int  # declared bytes of all files together


class HFFolder(BaseModel):
    """What an archived `save_pretrained` folder holds, as checked. File names are the folder's (the
    archive's member is `root` + name), except `skipped`, whose are the archive's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str  # the folder inside the archive: "" (files at the top) or one folder, "my-model/"
    config: dict[str, Any]  # config.json
    task: HFTask
    parameters: int  # the elements of every tensor of the weights (buffers such as batch-norm's too)
    weights_bytes: int
    weights: list[str]  # model.safetensors, or the shards its index names
    tokenizer_files: list[str]
    preprocessor: dict[str, Any] | None  # preprocessor_config.json
    tokenizer_config: dict[str, Any] | None  # tokenizer_config.json
    skipped: list[str]  # members present but never unpacked
    generation_config: dict[str, Any] | None = None  # generation_config.json (a language model's)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def labels(self) -> list[str]:
        """The classifier's labels by class id: the config's `id2label`, else `LABEL_<id>` for each of
        `num_labels` (transformers' default: 2). A causal language model has none."""
        if self.task == "causal-lm":
            return []
        id2label = self.config.get("id2label")
        if id2label is None:
            return [f"LABEL_{i}" for i in range(self.config.get("num_labels", DEFAULT_LABELS))]
        return [id2label[str(i)] for i in range(len(id2label))]

    @property
    def unpacked(self) -> list[str]:
        """The folder's files a worker unpacks: what `from_pretrained` reads, and nothing else."""
        documents = {PREPROCESSOR: self.preprocessor, GENERATION_CONFIG: self.generation_config}
        return _unpacked(self.weights, self.tokenizer_files, documents)


def archive_kind(f: BinaryIO) -> ArchiveKind | None:
    """Which archive the seekable stream `f` reads, from its first bytes (None: no archive)."""
    f.seek(0)
    head = f.read(tarfile.BLOCKSIZE)
    if _is_tar_header(head):
        return "tar"
    if head.startswith(GZIP_MAGIC) and _is_tar_header(_inflated_head(f)):
        return "tar.gz"  # (a safetensors file may start with those two bytes too: its header's length)
    return "zip" if zipfile.is_zipfile(f) else None


def _archive_kind(f: BinaryIO) -> ArchiveKind:
    kind = archive_kind(f)
    if kind is None:
        raise HFArchiveRejected(f"The file is no .zip, .tar or .tar.gz archive: {SAVE_HINT}")
    return kind


def _is_tar_header(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _inflated_head(f: BinaryIO) -> bytes:
    f.seek(0)
    try:
        return gzip.GzipFile(fileobj=f, mode="rb").read(tarfile.BLOCKSIZE)
    except TAR_ERRORS:
        return b""


def inspect_hf_archive(
    f: BinaryIO, limits: HFArchiveLimits, allowed_model_types: tuple[str, ...]
) -> HFFolder:
    """What the archive that the seekable stream `f` reads holds, once every check has passed; reads
    the members' names, the JSON documents and the safetensors headers, never the weights themselves."""
    kind = _archive_kind(f)
    with _opened(f, kind, limits) as archive:
        layout = _layout(list(_members(archive.entries(), limits)))
        facts = _Facts()
        for member in _members(archive.entries(), limits):
            name = _in_folder(member.name, layout.root)
            if name in layout.checked:
                with _reading(kind), member.open() as stream:
                    facts.read(name, stream, member.size)
    return _described(layout, facts, allowed_model_types)


def unpack_hf_archive(
    archive: Path, destination: Path, limits: HFArchiveLimits, allowed_model_types: tuple[str, ...]
) -> tuple[Path, HFFolder]:
    """Unpack the model folder of `archive` into the empty folder `destination` (the folder's files at
    its top, whatever folder held them in the archive), with every check of `inspect_hf_archive`, counting
    the bytes written; returns the folder and what it holds. Only `HFFolder.unpacked` stays there, and no
    link is made; a refused archive leaves nothing behind."""
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise ValueError(f"unpack into an empty folder, not {destination}")
    try:
        with archive.open("rb") as f:
            kind = _archive_kind(f)
            with _opened(f, kind, limits) as opened:
                layout = _layout(list(_members(opened.entries(), limits)))
                _extract(opened, kind, layout, destination, limits)
        folder = _described(layout, _facts_of(destination), allowed_model_types)
    except BaseException:
        _empty(destination)
        raise
    for path in destination.iterdir():
        if path.name not in folder.unpacked:
            path.unlink()
    return destination, folder


# Reading an archive's entries


@dataclass(frozen=True)
class _Entry:
    """An archive's entry as it declares itself."""

    name: str
    size: int
    kind: Literal["file", "folder", "link", "device"]
    open: Callable[[], BinaryIO]


class _Zip:
    def __init__(self, f: BinaryIO, limits: HFArchiveLimits):
        declared = check_zip_directory(f)
        if declared > limits.max_members:
            raise _too_many_members(declared, limits)
        self._archive = zipfile.ZipFile(f)
        inflated = sum(info.file_size for info in self._archive.infolist())
        archive_bytes = f.seek(0, 2)
        if inflates_like_a_bomb(inflated, archive_bytes):
            raise HFArchiveRejected(
                f"The zip archive's {archive_bytes} bytes inflate to {inflated} bytes, far more than a "
                f"model's files compress (a zip bomb?): {SAVE_HINT}"
            )

    def entries(self) -> Iterator[_Entry]:
        for info in self._archive.infolist():
            if info.flag_bits & 0x1:
                raise HFArchiveRejected(
                    f"{info.filename!r} is encrypted: archive the folder without a password"
                )
            yield _Entry(info.filename, info.file_size, _zip_kind(info), partial(self._archive.open, info))

    def close(self) -> None:
        self._archive.close()


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = stat.S_IFMT(info.external_attr >> 16)  # the Unix mode, where the archiver kept one
    if stat.S_ISLNK(mode):
        return "link"
    if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device"
    return "folder" if info.is_dir() or mode == stat.S_IFDIR else "file"


class _Tar:
    def __init__(self, f: BinaryIO, kind: ArchiveKind):
        self._f, self._kind = f, kind

    def entries(self) -> Iterator[_Entry]:
        """Each pass reads the stream from its start: a .tar.gz can only be read in order."""
        with _reading(self._kind):
            self._f.seek(0)
            stream = _TarStream(self._f, compressed=self._kind == "tar.gz")
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                data_bytes = 0
                for info in tar:
                    if info.offset_data - data_bytes > MAX_TAR_METADATA_BYTES:
                        raise HFArchiveRejected(
                            f"The tar archive's headers take more than {MAX_TAR_METADATA_BYTES} bytes: "
                            f"{SAVE_HINT}"
                        )
                    if info.isreg():
                        data_bytes += info.size
                    yield _Entry(info.name, info.size, _tar_kind(info), partial(tar.extractfile, info))

    def close(self) -> None:
        pass


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return "link"
    if info.isdir():
        return "folder"
    return "file" if info.isreg() and not info.issparse() else "device"


class _TarStream:
    """What `tarfile` reads an archive through: no single read past `MAX_TAR_READ` (`tarfile` reads a
    member's long name or pax records whole, at any size its header declares), and a gzip stream inflated
    by counted reads, refused once it inflates like a bomb."""

    def __init__(self, f: BinaryIO, compressed: bool):
        self._raw = f
        self._source = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        self._compressed = compressed
        self._inflated = 0

    def read(self, size: int = -1) -> bytes:
        if not 0 <= size <= MAX_TAR_READ:
            raise HFArchiveRejected(
                f"A tar header declares more than {MAX_TAR_READ} bytes of names or records: {SAVE_HINT}"
            )
        data = self._source.read(size)
        if self._compressed:
            self._inflated += len(data)
            if inflates_like_a_bomb(self._inflated, self._raw.tell()):
                raise HFArchiveRejected(
                    f"The .tar.gz's first {self._raw.tell()} bytes inflate to {self._inflated} bytes, far "
                    f"more than a model's files compress (a gzip bomb?): {SAVE_HINT}"
                )
        return data

    def seek(self, position: int) -> int:
        skip = position - self._source.tell()
        if not self._compressed or skip < 0:
            return self._source.seek(position)
        while skip > 0 and (chunk := self.read(min(skip, MAX_TAR_READ))):  # inflated and counted
            skip -= len(chunk)
        return self._source.tell()

    def tell(self) -> int:
        return self._source.tell()

    def seekable(self) -> bool:
        return True


@contextmanager
def _opened(f: BinaryIO, kind: ArchiveKind, limits: HFArchiveLimits) -> Iterator[_Zip | _Tar]:
    with _reading(kind):
        archive = _Zip(f, limits) if kind == "zip" else _Tar(f, kind)
    try:
        yield archive
    finally:
        archive.close()


@contextmanager
def _reading(kind: ArchiveKind) -> Iterator[None]:
    """Reads of the archive (never writes: a full disk is no damaged archive): a damaged archive's errors
    say so."""
    try:
        yield
    except ArchiveRejected as rejected:
        raise HFArchiveRejected(str(rejected)) from None
    except TAR_ERRORS as exc:
        raise HFArchiveRejected(
            f"The {kind} archive is damaged or uses an unsupported feature ({exc}): {SAVE_HINT}"
        ) from None


# The members: checked names and sizes


@dataclass(frozen=True)
class _Member:
    name: str  # normalised: no empty or "." parts
    size: int
    open: Callable[[], BinaryIO]


def _members(entries: Iterator[_Entry], limits: HFArchiveLimits) -> Iterator[_Member]:
    """The archive's files, each checked as it comes: its name, its kind, the count and sizes so far."""
    names: set[str] = set()
    declared = 0
    for count, entry in enumerate(entries, start=1):
        if count > limits.max_members:
            raise _too_many_members(count, limits)
        name = _checked_name(entry.name)
        if entry.kind == "link":
            raise HFArchiveRejected(f"{entry.name!r} is a link, which this server never unpacks: {SAVE_HINT}")
        if entry.kind == "device":
            raise HFArchiveRejected(f"{entry.name!r} is no regular file (a device or pipe?): {SAVE_HINT}")
        if entry.kind == "folder":
            continue
        if entry.size > limits.max_member_bytes:
            raise HFArchiveRejected(
                f"{entry.name!r} takes {entry.size} bytes, more than this server unpacks for one file "
                f"({limits.max_member_bytes} bytes)"
            )
        declared += entry.size
        if declared > limits.max_unpacked_bytes:
            raise HFArchiveRejected(
                f"The archive's files take more than {limits.max_unpacked_bytes} bytes unpacked, what "
                "this server unpacks at most: upload a smaller model"
            )
        if name in names:
            raise HFArchiveRejected(f"The archive holds {name!r} twice: {SAVE_HINT}")
        names.add(name)
        yield _Member(name, entry.size, entry.open)


def _too_many_members(count: int, limits: HFArchiveLimits) -> HFArchiveRejected:
    return HFArchiveRejected(
        f"The archive holds {count} members or more, more than this server reads ({limits.max_members}): "
        "archive only the model's folder"
    )


def _checked_name(name: str) -> str:
    """The member's name without empty or "." parts; refused if it could leave the folder unpacked."""
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name) or not _is_utf8(name):
        raise HFArchiveRejected(
            f"The member name {name!r} holds a backslash, a control character or bytes that are no UTF-8: "
            f"{SAVE_HINT}"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise HFArchiveRejected(f"The member name {name!r} is an absolute path: {SAVE_HINT}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise HFArchiveRejected(f"The member name {name!r} leads out of the folder (..): {SAVE_HINT}")
    return "/".join(parts)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # a tar's undecodable bytes come as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


# The folder: where config.json is, and what of it is read


@dataclass(frozen=True)
class _Layout:
    root: str
    files: dict[str, int]  # the folder's own files (not those of its subfolders): name -> declared bytes
    members: list[str]  # every file of the archive

    @property
    def checked(self) -> set[str]:
        """The folder's files whose contents are checked: JSON documents and safetensors headers."""
        return {name for name in self.files if name in DOCUMENT_BYTES or name.endswith(".safetensors")}

    @property
    def extracted(self) -> set[str]:
        """The folder's files a worker may need, unpacked before their contents are checked."""
        return self.checked | {name for name in self.files if _is_tokenizer_file(name)}


def _layout(members: list[_Member]) -> _Layout:
    configs = [
        m.name
        for m in members
        if m.name == CONFIG or (m.name.count("/") == 1 and m.name.endswith("/" + CONFIG))
    ]
    if CONFIG in configs:
        root = ""
    elif len(configs) == 1:
        root = configs[0].removesuffix(CONFIG)
    elif configs:
        raise HFArchiveRejected(
            f"The archive holds {len(configs)} folders with a config.json ({', '.join(configs[:5])}): "
            "upload one model's folder"
        )
    else:
        raise HFConfigMissing(f"The archive holds no config.json, at its top or in one folder: {SAVE_HINT}")
    files = {m.name.removeprefix(root): m.size for m in members if _in_folder(m.name, root) is not None}
    return _Layout(root=root, files=files, members=[m.name for m in members])


def _in_folder(name: str, root: str) -> str | None:
    """The name of the folder's own file that the member is, or None."""
    inside = name.removeprefix(root) if name.startswith(root) else None
    return inside if inside is not None and "/" not in inside else None


def _is_tokenizer_file(name: str) -> bool:
    return name in TOKENIZER_FILES or name.endswith(SENTENCEPIECE_SUFFIX)


def _unpacked(weights: list[str], tokenizer_files: list[str], documents: dict[str, Any]) -> list[str]:
    """The folder's files a worker unpacks, with those of `documents` (name: content) the folder holds."""
    index = [WEIGHTS_INDEX] if weights != [WEIGHTS] else []
    present = [name for name, document in documents.items() if document is not None]
    return [CONFIG, *index, *weights, *tokenizer_files, *present]


# The contents: JSON documents and safetensors headers


@dataclass(frozen=True)
class _WeightsFile:
    tensors: str  # a digest of its tensors' names: compared with the index's, in bounded memory
    parameters: int
    size: int


@dataclass
class _Facts:
    documents: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, _WeightsFile] = field(default_factory=dict)

    def read(self, name: str, stream: BinaryIO, size: int) -> None:
        if name.endswith(".safetensors"):
            try:
                header = read_safetensors_header(stream, size)
            except SafetensorsRejected as rejected:
                raise HFArchiveRejected(f"{name}: {rejected}") from None
            self.weights[name] = _WeightsFile(_digest(header.tensors), header.parameters, size)
        else:
            self.documents[name] = _document(name, stream)


def _digest(names: Iterable[str]) -> str:
    return hashlib.sha256("\0".join(sorted(names)).encode("utf-8", "surrogatepass")).hexdigest()


def _document(name: str, stream: BinaryIO) -> Any:
    limit = DOCUMENT_BYTES[name]
    text = read_exactly(stream, limit + 1)
    if len(text) > limit:
        raise HFArchiveRejected(f"{name} takes more than {limit} bytes, more than this server reads")
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSON syntax, encoding, integers of 4,300+ digits
        raise HFArchiveRejected(f"{name} is not JSON ({exc}): {SAVE_HINT}") from None
    if not isinstance(document, dict):
        raise HFArchiveRejected(f"{name} is no JSON object: {SAVE_HINT}")
    _check_storable(name, document)
    return document


def _no_constant(constant: str) -> None:
    raise ValueError(f"{constant} is no JSON number")


def _check_storable(name: str, document: object) -> None:
    """No deeper than `MAX_DOCUMENT_DEPTH`, and no text a database's JSON refuses (NUL, lone surrogates)."""
    stack = [(document, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DOCUMENT_DEPTH:
            raise HFArchiveRejected(f"{name} nests deeper than {MAX_DOCUMENT_DEPTH} levels")
        if isinstance(item, str) and ("\0" in item or not _is_utf8(item)):
            raise HFArchiveRejected(f"{name} holds a NUL character or a lone surrogate: {item[:40]!r}")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for pair in item.items() for child in pair)
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _facts_of(folder: Path) -> _Facts:
    facts = _Facts()
    for path in folder.iterdir():
        if path.name in DOCUMENT_BYTES or path.name.endswith(".safetensors"):
            with path.open("rb") as stream:
                facts.read(path.name, stream, path.stat().st_size)
    return facts


# What the folder holds


def _described(layout: _Layout, facts: _Facts, allowed_model_types: tuple[str, ...]) -> HFFolder:
    config = facts.documents[CONFIG]
    try:
        task = check_hf_config(config, allowed_model_types)
    except HFConfigRejected as rejected:
        raise HFArchiveRejected(f"config.json: {rejected}") from None
    if task != "causal-lm":  # whose classes are its vocabulary
        _check_labels(config)
    weights = _weights(layout, facts)
    tokenizer_files = sorted(name for name in layout.files if _is_tokenizer_file(name))
    documents = {
        name: facts.documents.get(name) for name in (PREPROCESSOR, TOKENIZER_CONFIG, GENERATION_CONFIG)
    }
    for name, document in documents.items():
        remote = [key for key in REMOTE_CODE_KEYS if key in (document or {})]
        if remote:
            raise HFArchiveRejected(
                f"{name} names code shipped with the model ({', '.join(remote)}), which this server never "
                "runs: remove those keys"
            )
    optional = {name: documents[name] for name in (PREPROCESSOR, GENERATION_CONFIG)}
    unpacked = {layout.root + name for name in _unpacked(weights, tokenizer_files, optional)}
    return HFFolder(
        root=layout.root,
        config=config,
        task=task,
        parameters=sum(facts.weights[name].parameters for name in weights),
        weights_bytes=sum(facts.weights[name].size for name in weights),
        weights=weights,
        tokenizer_files=tokenizer_files,
        preprocessor=documents[PREPROCESSOR],
        tokenizer_config=documents[TOKENIZER_CONFIG],
        generation_config=documents[GENERATION_CONFIG],
        skipped=[name for name in layout.members if name not in unpacked],
    )


def _check_labels(config: dict[str, Any]) -> None:
    """The classifier's labels: `id2label` ("0".."n-1") or `num_labels`, agreeing, at least 2."""
    id2label, num_labels = config.get("id2label"), config.get("num_labels")
    if num_labels is not None and not _is_int(num_labels):
        raise HFArchiveRejected(f"config.json: num_labels ({num_labels!r}) must be a whole number")
    if id2label is None:
        labels = DEFAULT_LABELS if num_labels is None else num_labels
    else:
        if not isinstance(id2label, dict) or set(id2label) != {str(i) for i in range(len(id2label))}:
            raise HFArchiveRejected('config.json: id2label must map the class ids "0", "1", ... to labels')
        if not all(isinstance(label, str) for label in id2label.values()):
            raise HFArchiveRejected("config.json: id2label's labels must be strings")
        if num_labels not in (None, len(id2label)):
            raise HFArchiveRejected(
                f"config.json: num_labels ({num_labels}) must be the number of id2label's labels "
                f"({len(id2label)})"
            )
        labels = len(id2label)
    if labels < 2:
        raise HFArchiveRejected("config.json: a classifier needs at least 2 labels")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _weights(layout: _Layout, facts: _Facts) -> list[str]:
    """The safetensors files `from_pretrained` reads: model.safetensors, or the shards its index names."""
    if WEIGHTS in facts.weights:
        return [WEIGHTS]
    if WEIGHTS_INDEX in facts.documents:
        return _shards(facts.documents[WEIGHTS_INDEX], facts)
    pickled = sorted(
        name for name in layout.files if name.endswith(PICKLED_SUFFIXES) and name != TRAINING_ARGS
    )
    if pickled:
        raise HFArchiveRejected(f"The folder's weights are pickled ({', '.join(pickled[:5])}): {PICKLE_HINT}")
    raise HFArchiveRejected(
        f"The folder holds no {WEIGHTS} (nor {WEIGHTS_INDEX} and its shards): {SAVE_HINT}"
    )


def _shards(index: dict[str, Any], facts: _Facts) -> list[str]:
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFArchiveRejected(f"{WEIGHTS_INDEX} has no weight_map of tensor names to shards: {SAVE_HINT}")
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or not shard.endswith(".safetensors"):
            raise HFArchiveRejected(
                f"{WEIGHTS_INDEX} names {shard!r} for {tensor!r}, no .safetensors file of the folder itself"
            )
        by_shard.setdefault(shard, []).append(tensor)
    for shard, tensors in by_shard.items():
        if shard not in facts.weights:
            raise HFArchiveRejected(
                f"{WEIGHTS_INDEX} names the shard {shard}, which the folder lacks: {SAVE_HINT}"
            )
        if facts.weights[shard].tensors != _digest(tensors):
            raise HFArchiveRejected(
                f"{shard} holds other tensors than {WEIGHTS_INDEX} names for it ({len(tensors)}): {SAVE_HINT}"
            )
    return sorted(by_shard)


# Unpacking


def _extract(
    archive: _Zip | _Tar, kind: ArchiveKind, layout: _Layout, destination: Path, limits: HFArchiveLimits
) -> None:
    """Write the folder's files a worker may need into `destination`, counting the bytes each really
    holds against what it declared and the limits."""
    written = 0
    for member in _members(archive.entries(), limits):
        name = _in_folder(member.name, layout.root)
        if name not in layout.extracted:
            continue
        with _reading(kind):
            stream = member.open()
        with stream, (destination / name).open("xb") as out:
            size = 0
            for chunk in _chunks(kind, stream):
                size += len(chunk)
                written += len(chunk)
                if size > member.size or written > limits.max_unpacked_bytes:
                    raise HFArchiveRejected(f"{member.name!r} holds more bytes than it declares: {SAVE_HINT}")
                out.write(chunk)
        if size != member.size:
            raise HFArchiveRejected(
                f"{member.name!r} ends before the {member.size} bytes it declares: {SAVE_HINT}"
            )


def _chunks(kind: ArchiveKind, stream: BinaryIO) -> Iterator[bytes]:
    while True:
        with _reading(kind):
            chunk = stream.read(READ_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
