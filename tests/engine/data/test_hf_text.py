"""Text for a Hugging Face model: JSON Lines, Parquet and .npz ids, tokenized with the teacher's own tokenizer
(its padding id, its special tokens), labels by the teacher's names or ids; every error names its fix."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

from engine.data import hf_datasets
from engine.data.hf_datasets import load_hf_dataset
from engine.data.hf_text import encode_hf_text, load_hf_tokenizer
from engine.plan.errors import JobFailed
from engine.plan.specs import HFSpec
from tests.hf_text_factories import bert_tokenizer_folder, roberta_tokenizer_folder

LABELS = {"negative": 0, "positive": 1}
MAX_LENGTH = 10


def text_spec(model_type: str = "bert", max_length: int = MAX_LENGTH, **config) -> HFSpec:
    labels = {"label2id": LABELS, "id2label": {"0": "negative", "1": "positive"}}
    return HFSpec(config={"model_type": model_type} | labels | config, num_classes=2, max_length=max_length)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return bert_tokenizer_folder(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory) -> Path:
    return roberta_tokenizer_folder(tmp_path_factory.mktemp("roberta"))


def tokenizer_ids(folder: Path, texts: list[str], pairs: list[str] | None = None) -> list[list[int]]:
    """What the teacher's tokenizer makes of the texts, as a transformers user would call it."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return tokenizer(texts, pairs, truncation=True, max_length=MAX_LENGTH, padding="max_length")["input_ids"]


def write_jsonl(directory: Path, records: list, name: str = "train.jsonl") -> Path:
    path = directory / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_parquet(directory: Path, columns: dict, name: str = "train.parquet", **options) -> Path:
    path = directory / name
    pq.write_table(pa.table(columns), path, **options)
    return path


def failure(path: Path, folder: Path | None, spec: HFSpec | None = None, fmt: str | None = None) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        load_hf_dataset(
            path, fmt or path.suffix[1:], spec or text_spec(), folder, param="dataset.train_file_id"
        )
    return caught.value


TEXTS = ["the cat sat", "what a good film", "a dog ran in the park and the bird sang a song"]


def test_jsonl_is_tokenized_by_the_teachers_tokenizer_and_labels_are_mapped(tmp_path, bert_folder):
    labels = ["positive", 0, "negative"]
    records = [{"text": text, "label": label} for text, label in zip(TEXTS, labels, strict=True)]
    dataset = load_hf_dataset(write_jsonl(tmp_path, records), "jsonl", text_spec(), bert_folder)
    assert dataset.x.dtype == torch.int64 and dataset.x.shape == (3, MAX_LENGTH)
    assert dataset.x.tolist() == tokenizer_ids(bert_folder, TEXTS)
    assert dataset.x[0, 0] == 2 and dataset.x[0, -1] == 0  # [CLS] first, [PAD] (0) after the text
    assert dataset.x[2, -1] == 3  # truncated, the closing [SEP] kept
    assert dataset.y.tolist() == [1, 0, 0]


def test_pairs_are_tokenized_together(tmp_path, bert_folder):
    records = [{"text": "the cat", "text_pair": "sat on the mat"}, {"text": "a dog", "text_pair": "ran"}]
    dataset = load_hf_dataset(write_jsonl(tmp_path, records), "jsonl", text_spec(), bert_folder)
    assert dataset.y is None
    assert dataset.x.tolist() == tokenizer_ids(bert_folder, ["the cat", "a dog"], ["sat on the mat", "ran"])
    assert (dataset.x[1] == 3).sum() == 2  # [CLS] a dog [SEP] ran [SEP]


def test_a_roberta_style_tokenizer_pads_with_its_own_id(tmp_path, roberta_folder):
    path = write_jsonl(tmp_path, [{"text": "the cat"}, {"text": "what a dull film"}])
    dataset = load_hf_dataset(path, "jsonl", text_spec("roberta"), roberta_folder)
    assert dataset.x.tolist() == tokenizer_ids(roberta_folder, ["the cat", "what a dull film"])
    assert dataset.x[0].tolist()[0] == 0 and dataset.x[0].tolist()[3:] == [2] + [1] * (MAX_LENGTH - 4)


def test_parquet_text_is_read_in_batches_each_row_in_its_place(tmp_path, bert_folder, monkeypatch):
    monkeypatch.setattr(hf_datasets, "TEXT_BATCH_ROWS", 2)  # several batches, across row groups
    texts, pairs = TEXTS * 2, ["a song", "the mat", "ran"] * 2
    labels = ["positive", "negative", "positive"] * 2
    columns = {"text": texts, "text_pair": pairs, "label": labels, "idx": range(6)}  # other columns ignored
    path = write_parquet(tmp_path, columns, row_group_size=3)
    dataset = load_hf_dataset(path, "parquet", text_spec(), bert_folder)
    assert dataset.x.tolist() == tokenizer_ids(bert_folder, texts, pairs)
    assert dataset.y.tolist() == [1, 0, 1] * 2
    columns["text"] = TEXTS + ["a", None, "b"]
    assert (
        "row 4 has no `text`"
        in failure(write_parquet(tmp_path, columns, row_group_size=3), bert_folder).message
    )


def test_parquet_labels_may_be_class_ids_or_none(tmp_path, bert_folder):
    labeled = write_parquet(tmp_path, {"text": TEXTS, "label": pa.array([1, 0, 1], pa.int8())})
    assert load_hf_dataset(labeled, "parquet", text_spec(), bert_folder).y.tolist() == [1, 0, 1]
    unlabeled = write_parquet(tmp_path, {"text": TEXTS, "label": pa.nulls(3, pa.int64())}, name="u.parquet")
    assert load_hf_dataset(unlabeled, "parquet", text_spec(), bert_folder).y is None


def test_a_label_the_teacher_does_not_know_names_itself_and_its_place(tmp_path, bert_folder):
    records = [{"text": "a", "label": "positive"}, {"text": "b", "label": "neutral"}]
    error = failure(write_jsonl(tmp_path, records), bert_folder)
    assert error.code == "dataset_invalid" and error.param == "dataset.train_file_id"
    assert "'neutral' of line 2" in error.message and "'negative', 'positive'" in error.message
    parquet = write_parquet(tmp_path, {"text": TEXTS, "label": [0, 1, 2]})
    assert "the label 2 of row 2" in failure(parquet, bert_folder).message


def test_the_teachers_labels_are_shown_a_few_at_most(tmp_path, bert_folder):
    many = {f"class {number}": number for number in range(40)}
    spec = HFSpec(config={"model_type": "bert", "label2id": many}, num_classes=40, max_length=MAX_LENGTH)
    error = failure(write_jsonl(tmp_path, [{"text": "a", "label": "other"}]), bert_folder, spec)
    assert "'class 4' and 35 more (or their class ids, 0 to 39)" in error.message


@pytest.mark.parametrize(
    "columns, words",
    [
        ({"sentence": ["a"], "label": [0]}, ["columns are `sentence`, `label`", "needs a `text` column"]),
        ({"text": [1], "label": [0]}, ["`text` holds int64"]),
        ({"text": ["a", None]}, ["row 1 has no `text`"]),
        ({"text": ["a", "b"], "label": [0, None]}, ["row 1 has no `label` but row 0 has one"]),
        ({"text": pa.array([], pa.string())}, ["no rows"]),
    ],
    ids=["no text column", "text not strings", "null text", "a label missing", "empty"],
)
def test_a_bad_parquet_file_is_named(tmp_path, bert_folder, columns, words):
    error = failure(write_parquet(tmp_path, columns), bert_folder)
    assert error.code == "dataset_invalid" and error.param == "dataset.train_file_id"
    assert all(word in error.message for word in words), error.message


def test_a_damaged_parquet_file_is_invalid(tmp_path, bert_folder):
    path = write_parquet(tmp_path, {"text": TEXTS})
    path.write_bytes(path.read_bytes()[:-30] + b"\x00" * 26 + b"PAR1")
    assert "could not be read as a Parquet file" in failure(path, bert_folder).message


def test_npz_token_ids_keep_their_ids_and_must_fit_the_model(tmp_path, bert_folder):
    path = tmp_path / "ids.npz"
    np.savez(path, x=np.array([[2, 5, 3, 0, 0, 0, 0, 0, 0, 0]], np.int32), y=np.array([1]))
    dataset = load_hf_dataset(path, "npz", text_spec(), None)
    assert dataset.x.tolist() == [[2, 5, 3, 0, 0, 0, 0, 0, 0, 0]] and dataset.y.tolist() == [1]
    assert "max_length = 12" in failure(path, None, text_spec(max_length=12)).message
    mismatch = failure(path, None, text_spec(vocab_size=5))
    assert mismatch.code == "vocabulary_mismatch" and "vocab_size is 5" in mismatch.message


def test_an_image_file_for_a_text_model_is_refused(tmp_path, bert_folder):
    error = failure(tmp_path / "x.bin", bert_folder, fmt="safetensors")
    assert "reads jsonl or parquet or npz datasets" in error.message


def test_text_needs_the_teachers_tokenizer(tmp_path, bert_folder):
    path = write_jsonl(tmp_path, [{"text": "a"}])
    assert failure(path, None).code == "tokenizer_required"
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    empty = failure(path, tmp_path / "config_only")
    assert empty.code == "tokenizer_invalid" and "no tokenizer vocabulary" in empty.message
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    assert failure(path, tmp_path / "broken").code == "tokenizer_invalid"


def test_a_tokenizer_without_a_padding_token_is_refused(tmp_path, bert_folder):
    tokenizer = load_hf_tokenizer(bert_folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no_pad")
    error = failure(write_jsonl(tmp_path, [{"text": "a"}]), tmp_path / "no_pad")
    assert error.code == "tokenizer_invalid" and "no padding token" in error.message


def test_max_length_must_leave_room_for_text(bert_folder):
    with pytest.raises(JobFailed, match="adds 3 special tokens to each pair of texts") as caught:
        encode_hf_text(bert_folder, ["a"], ["b"], max_length=4)
    assert caught.value.code == "incompatible_shapes"
    assert encode_hf_text(bert_folder, ["a"], None, max_length=3).shape == (1, 3)
