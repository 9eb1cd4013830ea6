"""A job file (JSON or YAML) for `distill jobs create -f` and `distill run`: the body of `POST /v1/jobs`,
where a file may also be named by its local path instead of its id (both upload it first):

    teacher: {file: ./teacher.safetensors, architecture: {...}}     # instead of file_id
    teacher: {file: ./my-model/}     # the folder a transformers model's save_pretrained wrote, zipped here
    teachers: [{file: ./a.safetensors, ...}, ...]
    dataset: {train_file: ./train.npz, validation_file: ./val.npz, tokenizer_file: ./tokenizer.json}
"""

import json
from collections.abc import Callable
from pathlib import Path

from distill_client.errors import DistillError

PURPOSES = {"train_file": "dataset", "validation_file": "dataset", "tokenizer_file": "tokenizer"}


class JobFileError(DistillError):
    """The job file cannot be read, or names a local file that is not there."""


def read_job_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobFileError(f"cannot read the job file {path}: {exc.strerror}") from None
    try:
        body = _parse_yaml(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except ValueError as exc:
        raise JobFileError(
            f"{path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise JobFileError(f"{path} must hold one object: the body of POST /v1/jobs")
    return body


def local_files(body: dict, relative_to: Path) -> list[tuple[str, Path, str]]:
    """The local files the job names by path: (the field, the path, the upload's purpose). A teacher's
    path may be a model folder (`Client.upload_model_folder`)."""
    found = []
    for field, teacher in _teachers_by_path(body):
        path = _path(teacher["file"], relative_to, f"{field}.file", folder_too=True)
        found.append((f"{field}.file", path, "teacher"))
    dataset = body.get("dataset") or {}
    for name, purpose in PURPOSES.items():
        if name in dataset:
            found.append((f"dataset.{name}", _path(dataset[name], relative_to, f"dataset.{name}"), purpose))
    return found


def with_file_ids(body: dict, file_id_of: Callable[[str], str]) -> dict:
    """The body with every `file`/`*_file` path replaced by the id `file_id_of(field)` gives it."""
    body = json.loads(json.dumps(body))  # a deep copy
    for field, teacher in _teachers_by_path(body):
        del teacher["file"]
        teacher["file_id"] = file_id_of(f"{field}.file")
    dataset = body.get("dataset") or {}
    for name in PURPOSES:
        if name in dataset:
            del dataset[name]
            dataset[f"{name}_id"] = file_id_of(f"dataset.{name}")
    return body


def _teachers_by_path(body: dict) -> list[tuple[str, dict]]:
    teachers = [("teacher", body.get("teacher"))]
    teachers += [(f"teachers.{i}", teacher) for i, teacher in enumerate(body.get("teachers") or [])]
    return [(field, t) for field, t in teachers if isinstance(t, dict) and "file" in t]


def _path(value: object, relative_to: Path, field: str, folder_too: bool = False) -> Path:
    what = "a local file or model folder" if folder_too else "a local file"
    if not isinstance(value, str):
        raise JobFileError(f"{field} must be the path of {what}")
    path = (relative_to / value).resolve()
    if not (path.is_file() or (folder_too and path.is_dir())):
        raise JobFileError(f"{field}: no {what.removeprefix('a local ')} at {path}")
    return path


def _parse_yaml(text: str) -> object:
    try:
        import yaml
    except ImportError:
        raise JobFileError("reading a YAML job file needs PyYAML: pip install pyyaml, or use JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
