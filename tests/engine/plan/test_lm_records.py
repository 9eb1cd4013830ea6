"""The rules of a language model's records, torch-free: each shape read, each rule broken named with its line
(or row) and what to write; a Parquet file's columns make one shape."""

import json

import pyarrow as pa
import pytest

from engine.plan.lm_records import (
    ChatRecord,
    LMRecordChecks,
    Message,
    PromptRecord,
    RecordRejected,
    TextRecord,
    lm_columns,
)
from tests.lm_factories import CHATS

CHAT = CHATS[1]


def read(*lines) -> list:
    """The records of the lines (dicts and lists written as JSON, bytes as they are), the rules across them
    checked."""
    checks = LMRecordChecks()
    records = [
        checks.read(line if isinstance(line, bytes) else json.dumps(line).encode(), number)
        for number, line in enumerate(lines, start=1)
    ]
    checks.finish()
    return records


def rejection(*lines) -> str:
    with pytest.raises(RecordRejected) as caught:
        read(*lines)
    return str(caught.value)


def test_each_shape_is_read_and_other_fields_are_ignored():
    assert read({"text": "a cat", "id": 3}, b"  ") == [TextRecord("a cat"), None]
    assert read({"prompt": "", "completion": "hi"}) == [PromptRecord("", "hi")]
    messages = [{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "hello"}]
    assert read({"messages": messages}) == [
        ChatRecord((Message("user", "hi"), Message("assistant", "hello")))
    ]


def with_messages(*messages) -> dict:
    return {"messages": list(messages)}


USER = {"role": "user", "content": "hi"}
ASSISTANT = {"role": "assistant", "content": "hello"}
BROKEN = {
    "mixed shapes": (
        [{"text": "a"}, CHAT],
        ["Line 2 has `messages` but line 1 has `text`", "give every record the same shape"],
    ),
    "two shapes in a record": ([{"text": "a", "prompt": "b", "completion": "c"}], ["Line 1 has `text` and"]),
    "no shape": ([{"label": 1}], ["Line 1 has no `text`, `prompt` and `completion`, or `messages`"]),
    "empty text": ([{"text": " \n"}], ["Line 1 has an empty `text`", "remove the record"]),
    "text not a string": ([{"text": 3}], ["Line 1 has `text` 3, not a string"]),
    "prompt without completion": ([{"prompt": "a"}], ["Line 1 has `prompt` but no `completion`"]),
    "completion without prompt": ([{"completion": "a"}], ["Line 1 has `completion` but no `prompt`"]),
    "empty completion": (
        [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": ""}],
        ["Line 2 has an empty `completion`", "only the completion's tokens are learnt"],
    ),
    "completion not a string": ([{"prompt": "a", "completion": ["b"]}], ['`completion` ["b"], not a string']),
    "prompt not a string": ([{"prompt": None, "completion": "b"}], ["`prompt` null, not a string"]),
    "messages not a list": ([{"messages": "hi"}], ['Line 1 has `messages` "hi", not a list']),
    "a message not an object": ([with_messages(USER, "hello")], ['Line 1\'s messages[1] is "hello"']),
    "a message without a role": ([with_messages(USER, {"content": "x"})], ["messages[1] has no `role`"]),
    "an unknown role": (
        [with_messages(USER, {"role": "tool", "content": "x"}, ASSISTANT)],
        ['Line 1\'s messages[1] has `role` "tool"', "system, user, assistant"],
    ),
    "a message without content": ([with_messages(USER, {"role": "assistant"})], ["has no `content`"]),
    "content not a string": (
        [with_messages({"role": "user", "content": ["hi"]}, ASSISTANT)],
        ['Line 1\'s messages[0] has `content` ["hi"]'],
    ),
    "no assistant message": ([with_messages(USER, USER)], ["Line 1 has no assistant message"]),
    "no messages": ([{"messages": []}], ["Line 1 has no assistant message"]),
    "an empty assistant message": (
        [with_messages(USER, {"role": "assistant", "content": ""})],
        ["Line 1's messages[1] is an empty assistant message"],
    ),
    "the assistant first": (
        [with_messages(ASSISTANT, USER, ASSISTANT)],
        ["Line 1's messages[0] is the assistant's", "starts with a system or user message"],
    ),
    "not an object": ([[1]], ["Line 1 is not a JSON object", '{"prompt": "2 + 2 =", "completion": " 4"}']),
    "not json": ([b"{"], ["Line 1 is not JSON", '{"text": "a document"}']),
}


@pytest.mark.parametrize("lines, says", BROKEN.values(), ids=BROKEN)
def test_each_rule_broken_names_its_line_and_what_to_write(lines, says):
    message = rejection(*lines)
    for words in says:
        assert words in message


def test_a_file_without_records_says_so():
    checks = LMRecordChecks(file="data.jsonl")
    checks.read(b"\n", 1)
    with pytest.raises(
        RecordRejected, match="data.jsonl has no records in its first 1 lines: write one JSON"
    ):
        checks.finish(lines_read=1)


def test_rows_are_named_as_rows():
    checks = LMRecordChecks()
    checks.check({"prompt": "a", "completion": "b"}, "row 0")
    with pytest.raises(RecordRejected, match="^Row 1 has an empty `completion`"):
        checks.check({"prompt": "a", "completion": ""}, "row 1")


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.large_string()), ("name", pa.string())]))


@pytest.mark.parametrize(
    "fields, shape, columns",
    [
        ([("text", pa.string()), ("id", pa.int64())], TextRecord, ["text"]),
        (
            [("completion", pa.large_string()), ("prompt", pa.string())],
            PromptRecord,
            ["prompt", "completion"],
        ),
        ([("messages", MESSAGES)], ChatRecord, ["messages"]),
    ],
)
def test_parquet_columns_make_one_shape(fields, shape, columns):
    assert lm_columns(pa.schema(fields)) == (shape, columns)


@pytest.mark.parametrize(
    "fields, says",
    [
        ([("label", pa.int64())], "The file's columns are `label`: a language model's Parquet dataset has"),
        ([("prompt", pa.string())], "The file's columns are `prompt`"),
        ([("text", pa.string()), ("messages", MESSAGES)], "columns of more than one shape, `text` and"),
        ([("text", pa.binary())], "Column `text` holds binary"),
        ([("messages", pa.list_(pa.string()))], "Column `messages` holds list<item: string>"),
        ([("messages", pa.list_(pa.struct([("role", pa.string())])))], "Column `messages` holds"),
    ],
)
def test_parquet_columns_of_no_shape_are_named(fields, says):
    with pytest.raises(RecordRejected) as caught:
        lm_columns(pa.schema(fields))
    assert says in str(caught.value)
