"""The engine's loaders of a user's files are total: whatever the bytes, a dataset, a tokenizer or a
safetensors teacher loads or fails with a `JobFailed` that says what to fix, never another exception.
Hypothesis feeds each random bytes and damaged real files, for a bounded, repeatable number of cases."""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save

from engine.data.arrays import load_npz
from engine.data.hf_datasets import load_hf_dataset
from engine.data.text import load_jsonl, load_tokenizer
from engine.models.registry import build_model
from engine.plan.errors import JobFailed
from engine.plan.specs import HFSpec
from engine.teachers.loading import load_teacher
from tests.engine.factories import STUDENT_SPEC
from tests.hf_text_factories import bert_tokenizer_folder

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
VOCABULARY = {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "a": 2}, "unk_token": "[UNK]"}
TOKENIZER = json.dumps(
    {"version": "1.0", "model": VOCABULARY, "pre_tokenizer": {"type": "Whitespace"}}
).encode()


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def parquet(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), (value, 0, 255 - value)).save(buffer, format="PNG")
    return buffer.getvalue()


def damaged(seed: bytes) -> st.SearchStrategy[bytes]:
    """A real file with some bytes overwritten and perhaps cut short."""
    edits = st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=8)

    def edited(changes: list[tuple[int, int]], keep: int) -> bytes:
        data = bytearray(seed)
        for position, value in changes:
            data[position] = value
        return bytes(data[:keep])

    return st.builds(edited, edits, st.integers(0, len(seed)))


def loads_or_refuses(load, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file"
        path.write_bytes(content)
        try:
            load(path)
        except JobFailed as error:
            assert error.code and error.message


DATASET = npz(x=np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32), y=np.arange(6) % 3)
TEACHER = save(build_model(STUDENT_SPEC).state_dict())


@FUZZ
@given(content=st.binary(max_size=2048) | damaged(DATASET))
def test_npz_datasets_load_or_are_refused(content):
    loads_or_refuses(load_npz, content)
    loads_or_refuses(lambda path: load_npz(path, token_ids=True), content)


@FUZZ
@given(
    content=st.binary(max_size=1024) | damaged(b'{"text": "a a", "label": 0}\n{"text": "a", "label": 1}\n')
)
def test_json_lines_load_or_are_refused(tmp_path_factory, content):
    tokenizer = tmp_path_factory.getbasetemp() / "fuzz-tokenizer.json"
    tokenizer.write_bytes(TOKENIZER)
    loads_or_refuses(lambda path: load_jsonl(path, tokenizer, max_length=8), content)


HF_LABELS = {"model_type": "bert", "label2id": {"no": 0, "yes": 1}}
TEXT_PARQUET = parquet({"text": ["a b", "c"], "text_pair": ["d", "e f"], "label": ["yes", "no"]})
IMAGE_PARQUET = parquet({"image": [png(0), png(200)], "label": [1, 0]})


@FUZZ
@given(content=st.binary(max_size=1024) | damaged(TEXT_PARQUET))
def test_parquet_text_loads_or_is_refused(tmp_path_factory, content):
    folder = tmp_path_factory.getbasetemp() / "fuzz-hf-tokenizer"
    if not folder.exists():
        bert_tokenizer_folder(folder)
    spec = HFSpec(config=HF_LABELS, num_classes=2, max_length=8)
    loads_or_refuses(lambda path: load_hf_dataset(path, "parquet", spec, folder), content)


@FUZZ
@given(content=st.binary(max_size=1024) | damaged(IMAGE_PARQUET))
def test_parquet_images_load_or_are_refused(content):
    spec = HFSpec(config=HF_LABELS | {"model_type": "vit"}, num_classes=2, input_shape=[3, 4, 4])
    loads_or_refuses(lambda path: load_hf_dataset(path, "parquet", spec, None), content)


@FUZZ
@given(content=st.binary(max_size=1024) | damaged(TOKENIZER))
def test_tokenizers_load_or_are_refused(content):
    loads_or_refuses(load_tokenizer, content)


@FUZZ
@given(content=st.binary(max_size=1024) | damaged(TEACHER))
def test_safetensors_teachers_load_or_are_refused(content):
    loads_or_refuses(lambda path: load_teacher(path, "safetensors", STUDENT_SPEC), content)
