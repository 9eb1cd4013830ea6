"""A language model's dataset: each shape read alike from JSON Lines and Parquet; the labels are the next
tokens, IGNORE_INDEX on padding, prompts and turns that are not the assistant's; packing loses no token; a
text longer than max_length goes on, a prompt or conversation over it is named; an EOS that pads is still
learnt; every error names its record and what to do."""

import pytest
import torch

from engine.data.arrays import split_holdout
from engine.data.lm_text import (
    IGNORE_INDEX,
    LMDataset,
    load_lm_dataset,
    load_lm_tokenizer,
    padding_id,
)
from engine.plan.errors import JobFailed
from tests.lm_factories import (
    CHATML,
    CHATS,
    PROMPTS,
    RECORDS,
    TEXTS,
    lm_tokenizer_folder,
    write_jsonl,
    write_parquet,
)

WRITERS = {"jsonl": write_jsonl, "parquet": write_parquet}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """llama-style: a BOS before each text, no padding token."""
    return lm_tokenizer_folder(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tokenizer(folder):
    return load_lm_tokenizer(folder)


def read(directory, records, folder, format="jsonl", **options) -> LMDataset:
    path = WRITERS[format](directory / f"data.{format}", records)
    return load_lm_dataset(path, format, folder, **{"max_length": 32} | options)


def failure(directory, records, folder, format="jsonl", **options) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        read(directory, records, folder, format, param="dataset.train_file_id", **options)
    assert caught.value.param == "dataset.train_file_id"
    return caught.value


def tokens(dataset: LMDataset, row: int) -> list[int]:
    """The row's ids that are tokens, not padding."""
    return dataset.ids[row][dataset.attention_mask[row].bool()].tolist()


def learnt(dataset: LMDataset, row: int) -> list[int]:
    labels = dataset.labels[row]
    return labels[labels != IGNORE_INDEX].tolist()


def ids_of(tokenizer, text: str, special_tokens: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special_tokens)["input_ids"]


def assert_labels_are_the_next_tokens(dataset: LMDataset):
    """Within a block each label is the next position's id; padding is never learnt."""
    following = dataset.labels[:, :-1]
    counted = following != IGNORE_INDEX
    assert torch.equal(following[counted], dataset.ids[:, 1:][counted])
    assert dataset.attention_mask[:, 1:][counted].all()
    assert (dataset.labels[dataset.attention_mask == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("shape", RECORDS)
def test_each_shape_reads_the_same_from_json_lines_and_parquet(tmp_path, folder, shape, monkeypatch):
    monkeypatch.setattr("engine.data.lm_text.BATCH_RECORDS", 2)  # batches of records, the last one short
    jsonl = read(tmp_path, RECORDS[shape], folder, "jsonl", max_length=96)
    parquet = read(tmp_path, RECORDS[shape], folder, "parquet", max_length=96)
    for part in ("ids", "labels", "attention_mask"):
        assert getattr(jsonl, part).dtype == torch.int64
        assert torch.equal(getattr(jsonl, part), getattr(parquet, part)), part
    assert_labels_are_the_next_tokens(jsonl)


@pytest.mark.parametrize("bos", [True, False], ids=["llama-style", "gpt2-style"])
def test_an_unpacked_text_learns_each_next_token_and_the_eos(tmp_path, bos):
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", bos=bos)
    tokenizer = load_lm_tokenizer(folder)
    dataset = read(tmp_path, TEXTS, folder, packing=False)
    assert len(dataset) == len(TEXTS)
    for row, record in enumerate(TEXTS):
        expected = ids_of(tokenizer, record["text"], special_tokens=True) + [tokenizer.eos_token_id]
        assert (expected[0] == tokenizer.bos_token_id) == bos
        assert tokens(dataset, row) == expected
        assert learnt(dataset, row) == expected[1:]  # every token but the first, which follows none
    assert_labels_are_the_next_tokens(dataset)


def test_packing_joins_the_texts_after_their_eos_and_loses_no_token(tmp_path, folder, tokenizer):
    dataset = read(tmp_path, TEXTS, folder, max_length=16)  # packed: the default for texts
    stream = [
        token
        for record in TEXTS
        for token in ids_of(tokenizer, record["text"], special_tokens=True) + [tokenizer.eos_token_id]
    ]
    assert len(dataset) == -(-len(stream) // 16)
    assert dataset.attention_mask[:-1].all()  # only the last block has padding
    assert [token for row in range(len(dataset)) for token in tokens(dataset, row)] == stream
    assert dataset.ids.flatten().tolist()[: len(stream)].count(tokenizer.eos_token_id) == len(TEXTS)
    # each token of the stream but the first is learnt once, in order: a block's last position learns the
    # next block's first token
    assert [label for row in range(len(dataset)) for label in learnt(dataset, row)] == stream[1:]
    assert dataset.labels[0, -1] == dataset.ids[1, 0]


def test_an_unpacked_text_longer_than_max_length_goes_on_in_the_next_blocks(tmp_path, folder, tokenizer):
    text = TEXTS[1]["text"]
    dataset = read(tmp_path, [{"text": text}, {"text": "a cat"}], folder, max_length=8, packing=False)
    expected = ids_of(tokenizer, text, special_tokens=True) + [tokenizer.eos_token_id]
    blocks = -(-len(expected) // 8)
    assert [token for row in range(blocks) for token in tokens(dataset, row)] == expected
    assert [label for row in range(blocks) for label in learnt(dataset, row)] == expected[1:]
    assert len(dataset) == blocks + 1  # the next text starts a block of its own
    assert tokens(dataset, blocks) == ids_of(tokenizer, "a cat", special_tokens=True) + [
        tokenizer.eos_token_id
    ]


def test_a_prompt_and_completion_learns_only_the_completion_and_the_eos(tmp_path, folder, tokenizer):
    dataset = read(tmp_path, PROMPTS, folder)
    assert len(dataset) == len(PROMPTS)  # not packed: one record a block
    for row, record in enumerate(PROMPTS):
        prompt = ids_of(tokenizer, record["prompt"], special_tokens=True)
        completion = ids_of(tokenizer, record["completion"]) + [tokenizer.eos_token_id]
        assert tokens(dataset, row) == prompt + completion
        assert learnt(dataset, row) == completion
        assert tokenizer.decode(learnt(dataset, row)) == record["completion"] + "</s>"
        assert (dataset.labels[row, : len(prompt) - 1] == IGNORE_INDEX).all()
    assert_labels_are_the_next_tokens(dataset)


def test_packed_prompts_when_asked_still_learn_only_the_completions(tmp_path, folder, tokenizer):
    dataset = read(tmp_path, PROMPTS, folder, max_length=16, packing=True)
    expected = [
        token
        for record in PROMPTS
        for token in ids_of(tokenizer, record["completion"]) + [tokenizer.eos_token_id]
    ]
    assert [label for row in range(len(dataset)) for label in learnt(dataset, row)] == expected


def test_a_conversation_learns_the_assistants_turns_as_transformers_marks_them(tmp_path, folder, tokenizer):
    dataset = read(tmp_path, CHATS, folder, max_length=96)
    for row, record in enumerate(CHATS):
        marked = tokenizer.apply_chat_template(
            record["messages"], return_dict=True, return_assistant_tokens_mask=True
        )
        assert tokens(dataset, row) == marked["input_ids"]
        learnt_positions = (dataset.labels[row, : len(marked["input_ids"]) - 1] != IGNORE_INDEX).tolist()
        assert learnt_positions == [bool(mark) for mark in marked["assistant_masks"][1:]]
        turns = [m["content"] + "<|im_end|>\n" for m in record["messages"] if m["role"] == "assistant"]
        assert tokenizer.decode(learnt(dataset, row)) == "".join(turns)
    assert_labels_are_the_next_tokens(dataset)


def test_an_eos_that_pads_is_still_learnt_where_it_ends_a_text(tmp_path, folder, tokenizer):
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id is None and padding_id(tokenizer) == eos
    dataset = read(tmp_path, PROMPTS[:1], folder)
    length = len(tokens(dataset, 0))
    assert (dataset.ids[0, length:] == eos).all() and (dataset.attention_mask[0, length:] == 0).all()
    assert dataset.labels[0, length - 2] == eos  # the real EOS, the completion's end
    assert (dataset.labels[0, length - 1 :] == IGNORE_INDEX).all()


def test_a_padding_token_pads(tmp_path):
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", pad=True)
    tokenizer = load_lm_tokenizer(folder)
    dataset = read(tmp_path, PROMPTS[:1], folder)
    assert dataset.ids[0, -1] == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_a_tokenizer_with_neither_padding_nor_eos_is_refused(tokenizer):
    without = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    without.eos_token = None
    with pytest.raises(JobFailed) as caught:
        padding_id(without)
    assert caught.value.code == "tokenizer_invalid" and "set tokenizer.eos_token" in caught.value.message


@pytest.mark.parametrize("format, where", [("jsonl", "Line 2"), ("parquet", "Row 1")])
@pytest.mark.parametrize("shape", ["prompt", "messages"])
def test_a_record_over_max_length_names_itself_and_its_tokens(tmp_path, folder, format, where, shape):
    records = RECORDS[shape][1::-1]  # the longer second
    count = len(tokens(read(tmp_path, records, folder, format, max_length=96), 1))
    failed = failure(tmp_path, records, folder, format, max_length=count - 1)
    assert failed.code == "dataset_invalid"
    assert failed.message.startswith(f"{where} has {count} tokens, more than max_length ({count - 1}): raise")


def test_truncation_keeps_the_end_or_the_start(tmp_path, folder, tokenizer):
    whole = tokens(read(tmp_path, PROMPTS[:1], folder), 0)
    completion = ids_of(tokenizer, PROMPTS[0]["completion"]) + [tokenizer.eos_token_id]
    left = read(tmp_path, PROMPTS[:1], folder, max_length=4, truncation="left")
    assert tokens(left, 0) == whole[-4:] and learnt(left, 0) == completion[-3:]
    right = read(tmp_path, PROMPTS[:1], folder, max_length=len(whole) - 1, truncation="right")
    assert tokens(right, 0) == whole[:-1] and tokens(right, 0)[-1] != whole[-1]
    failed = failure(tmp_path, PROMPTS[:1], folder, max_length=4, truncation="right")
    assert "its first 4, which `right` truncation keeps, have none to learn" in failed.message


def test_messages_need_a_chat_template(tmp_path):
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", chat_template=None)
    failed = failure(tmp_path, CHATS, folder, max_length=96)
    assert failed.code == "chat_template_missing"
    assert (
        "tokenizer.chat_template = " in failed.message
        and "tokenizer.save_pretrained(folder)" in failed.message
    )


def test_a_template_that_renders_first_turns_otherwise_is_refused(tmp_path):
    counted = "{{ messages | length }} messages\n" + CHATML  # the count changes as the turns go on
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", chat_template=counted)
    failed = failure(tmp_path, CHATS, folder, max_length=96)
    assert failed.code == "chat_template_unsupported"
    assert "line 1's conversation up to its messages[2]" in failed.message
    assert "write each assistant turn as a record of its own" in failed.message


def test_a_template_failing_on_a_conversation_names_it(tmp_path):
    strict = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}" + CHATML
    )
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", chat_template=strict)
    failed = failure(tmp_path, CHATS[1:] + CHATS[:1], folder, max_length=96)
    assert failed.code == "dataset_invalid"
    assert failed.message == "the tokenizer's chat template failed on line 2's conversation: no system role"


def test_a_template_that_drops_the_assistants_turns_is_refused(tmp_path):
    users_only = (
        "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    folder = lm_tokenizer_folder(tmp_path / "tokenizer", chat_template=users_only)
    failed = failure(tmp_path, CHATS, folder, max_length=96)
    assert failed.message.startswith("the tokenizer's chat template renders none of line 1's assistant turns")


@pytest.mark.parametrize(
    "format, records, says",
    [
        ("jsonl", [TEXTS[0], PROMPTS[0]], "Line 2 has `prompt` and `completion` but line 1 has `text`"),
        ("jsonl", [PROMPTS[0], {"prompt": "a", "completion": ""}], "Line 2 has an empty `completion`"),
        ("parquet", [PROMPTS[0], {"prompt": "a", "completion": ""}], "data.parquet: Row 1 has an empty"),
        (
            "parquet",
            [PROMPTS[0], {"prompt": "a", "completion": None}],
            "row 1 has no `completion` (it is null)",
        ),
        (
            "parquet",
            [CHATS[1], {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}],
            'Row 1\'s messages[1] has `role` "bot"',
        ),
        ("parquet", [{"text": "a", "prompt": "b"}], "columns of more than one shape"),
    ],
)
def test_a_broken_record_rule_names_its_line_or_row(tmp_path, folder, format, records, says):
    failed = failure(tmp_path, records, folder, format)
    assert failed.code == "dataset_invalid" and says in failed.message


def test_a_held_out_share_of_blocks_is_seeded(tmp_path, folder):
    dataset = read(tmp_path, TEXTS * 4, folder, max_length=8)
    train, validation = split_holdout(dataset, 0.1, seed=0)
    assert len(validation) == round(len(dataset) * 0.1) and len(train) + len(validation) == len(dataset)
    rows = {tuple(row) for part in (train, validation) for row in part.ids.tolist()}
    assert rows == {tuple(row) for row in dataset.ids.tolist()}
    again, _ = split_holdout(dataset, 0.1, seed=0)
    assert torch.equal(again.labels, train.labels) and torch.equal(again.attention_mask, train.attention_mask)
