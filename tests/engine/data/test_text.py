"""Text datasets: JSON Lines tokenized into padded ids; token-id .npz files; every error names its fix."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from engine.data.arrays import load_npz
from engine.data.text import check_vocabulary, load_jsonl, load_tokenizer, vocabulary_size
from engine.plan.errors import JobFailed
from engine.plan.specs import TransformerSpec

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the bird sang"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def word_level_tokenizer(special_tokens: list[str] = SPECIALS, cls_sep: bool = False) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=special_tokens))
    if cls_sep:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
        )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> Path:
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture
def tokenizer_path(tmp_path) -> Path:
    return save_tokenizer(word_level_tokenizer(), tmp_path)


def write_lines(directory: Path, lines: list, name: str = "data.jsonl") -> Path:
    """Dicts and lists are written as JSON, strings as they are."""
    path = directory / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def dataset_error(path: Path, tokenizer_path: Path, code: str = "dataset_invalid") -> str:
    with pytest.raises(JobFailed) as caught:
        load_jsonl(path, tokenizer_path, max_length=6)
    assert caught.value.code == code
    return caught.value.message


def test_ids_are_padded_with_zero_and_truncated(tmp_path, tokenizer_path):
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    records = [{"text": "the cat sat", "label": 1}, {"text": "the cat sat on the mat the end", "label": 0}]
    dataset = load_jsonl(write_lines(tmp_path, records), tokenizer_path, max_length=6)
    assert dataset.x.dtype == torch.int64 and dataset.x.shape == (2, 6)
    cat_sat = tokenizer.encode("the cat sat").ids
    assert dataset.x[0].tolist() == cat_sat + [0, 0, 0]
    assert dataset.x[1].tolist() == tokenizer.encode("the cat sat on the mat the end").ids[:6]
    assert dataset.y.dtype == torch.int64 and dataset.y.tolist() == [1, 0]


def test_truncation_keeps_the_tokenizers_special_tokens(tmp_path):
    tokenizer = word_level_tokenizer(cls_sep=True)
    records = [{"text": "the cat sat on the mat"}, {"text": "the bird"}]
    dataset = load_jsonl(write_lines(tmp_path, records), save_tokenizer(tokenizer, tmp_path), max_length=5)
    cls, sep, the = (tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]", "the"))
    assert dataset.x[0, 0] == cls and dataset.x[0, 4] == sep
    assert dataset.x[1].tolist() == [cls, the, tokenizer.token_to_id("bird"), sep, 0]


def test_pairs_of_texts_are_encoded_together(tmp_path, tokenizer_path):
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    records = [{"text": "the cat", "text_pair": "sat on the mat"}, {"text": "a dog", "text_pair": "ran"}]
    dataset = load_jsonl(write_lines(tmp_path, records), tokenizer_path, max_length=6)
    assert dataset.x[0].tolist() == tokenizer.encode("the cat", "sat on the mat").ids
    assert dataset.x[1].tolist() == tokenizer.encode("a dog", "ran").ids + [0, 0, 0]


def test_unlabeled_lines_give_no_labels_and_blank_lines_are_skipped(tmp_path, tokenizer_path):
    lines = [{"text": "the cat"}, "", {"text": "a dog", "label": None}, "   "]
    dataset = load_jsonl(write_lines(tmp_path, lines), tokenizer_path, max_length=4)
    assert len(dataset) == 2 and dataset.y is None


def test_unknown_words_become_the_unknown_token(tmp_path, tokenizer_path):
    dataset = load_jsonl(write_lines(tmp_path, [{"text": "zebra"}]), tokenizer_path, max_length=3)
    assert dataset.x[0].tolist() == [SPECIALS.index("[UNK]"), 0, 0]


BAD_LINES = {
    "not json": ("{not json", ["Line 2", "is not JSON"]),
    "not an object": ("[1, 2]", ["Line 2", "not a JSON object", "[1, 2]"]),
    "missing text": ({"label": 1}, ["Line 2", "no string `text`"]),
    "text not a string": ({"text": 5, "label": 1}, ["Line 2", "`text` is 5"]),
    "float label": ({"text": "a", "label": 1.5}, ["Line 2", "1.5", "integer"]),
    "string label": ({"text": "a", "label": "1"}, ["Line 2", '"1"', "integer"]),
    "boolean label": ({"text": "a", "label": True}, ["Line 2", "true", "integer"]),
    "label missing among labeled lines": ({"text": "a"}, ["Line 2", "label every line"]),
    "a label of 5,000 digits": ('{"text": "a", "label": ' + "9" * 5000 + "}", ["Line 2", "is not JSON"]),
}


@pytest.mark.parametrize("bad_line, words", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_bad_line_is_named(tmp_path, tokenizer_path, bad_line, words):
    path = write_lines(tmp_path, [{"text": "the cat", "label": 0}, bad_line, {"text": "a dog", "label": 1}])
    message = dataset_error(path, tokenizer_path)
    assert all(word in message for word in words), message


def test_non_utf8_line_is_named(tmp_path, tokenizer_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert "Line 2 is not UTF-8" in dataset_error(path, tokenizer_path)


def test_empty_and_missing_datasets(tmp_path, tokenizer_path):
    assert "no records" in dataset_error(write_lines(tmp_path, ["", " "]), tokenizer_path)
    assert "does not exist" in dataset_error(tmp_path / "absent.jsonl", tokenizer_path)


def test_unreadable_tokenizer(tmp_path):
    data = write_lines(tmp_path, [{"text": "a"}])
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"model": "nonsense"}')
    assert "could not be loaded" in dataset_error(data, garbage, "tokenizer_invalid")
    assert "does not exist" in dataset_error(data, tmp_path / "absent.json", "tokenizer_invalid")


def test_a_line_the_tokenizer_cannot_encode_is_named(tmp_path):
    no_unknown_token = Tokenizer(models.WordLevel({"[PAD]": 0, "cat": 1}))
    path = write_lines(tmp_path, [{"text": "cat"}, {"text": "cat"}, {"text": "zebra"}])
    assert "line 3" in dataset_error(path, save_tokenizer(no_unknown_token, tmp_path))


def test_tokenizer_whose_pad_id_is_not_zero_is_refused(tmp_path):
    path = save_tokenizer(word_level_tokenizer(["[UNK]", "[PAD]"]), tmp_path)
    with pytest.raises(JobFailed, match="padding token has id 1") as caught:
        load_tokenizer(path)
    assert caught.value.code == "tokenizer_invalid"


def test_tokenizer_without_a_pad_token_is_refused(tmp_path):
    path = save_tokenizer(word_level_tokenizer(["[UNK]"]), tmp_path)
    with pytest.raises(JobFailed, match="no padding token") as caught:
        load_tokenizer(path)
    assert caught.value.code == "tokenizer_invalid"


def test_padding_configuration_decides_the_pad_id(tmp_path):
    tokenizer = word_level_tokenizer(["[UNK]", "<blank>"])
    tokenizer.enable_padding(pad_id=0, pad_token="[UNK]")
    load_tokenizer(save_tokenizer(tokenizer, tmp_path))
    tokenizer.enable_padding(pad_id=1, pad_token="<blank>")
    with pytest.raises(JobFailed, match="has id 1"):
        load_tokenizer(save_tokenizer(tokenizer, tmp_path))


def test_vocabulary_larger_than_the_model_is_a_mismatch(tokenizer_path):
    size = vocabulary_size(load_tokenizer(tokenizer_path))
    assert size == len(Tokenizer.from_file(str(tokenizer_path)).get_vocab())
    spec = TransformerSpec(vocab_size=size, max_length=4, num_classes=2, hidden_size=8, num_heads=1)
    check_vocabulary(size, spec)
    with pytest.raises(JobFailed) as caught:
        check_vocabulary(size + 5, spec)
    assert caught.value.code == "vocabulary_mismatch"
    assert str(size + 5) in caught.value.message and str(size) in caught.value.message


# Token ids in .npz files


def save_npz(directory: Path, **arrays) -> Path:
    path = directory / "ids.npz"
    np.savez(path, **arrays)
    return path


def test_token_id_npz_stays_int64(tmp_path):
    path = save_npz(tmp_path, x=np.array([[5, 3, 0], [2, 0, 0]], dtype=np.int32), y=np.array([0, 1]))
    dataset = load_npz(path, token_ids=True)
    assert dataset.x.dtype == torch.int64 and dataset.x.tolist() == [[5, 3, 0], [2, 0, 0]]
    assert load_npz(path).x.dtype == torch.float32  # the default is unchanged


@pytest.mark.parametrize(
    "x, words",
    [
        (np.ones((2, 3), np.float32), "must be integers"),
        (np.ones((2, 3, 1), np.int64), "[samples, sequence_length]"),
        (np.array([[1, -2]]), "negative"),
    ],
    ids=["floats", "3-D", "negative"],
)
def test_bad_token_id_npz(tmp_path, x, words):
    with pytest.raises(JobFailed, match=words.replace("[", r"\[")) as caught:
        load_npz(save_npz(tmp_path, x=x), token_ids=True)
    assert caught.value.code == "dataset_invalid"
