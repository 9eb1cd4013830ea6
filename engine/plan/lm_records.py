"""The rules of a causal language model's dataset: JSON Lines (one JSON object a line, blank lines skipped) or
Parquet (one record a row), every record of one of three shapes:

- `{"text": "..."}`: plain language modelling, every token learnt;
- `{"prompt": "...", "completion": "..."}`: only the completion's tokens learnt (the prompt may be empty);
- `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`: a conversation, rendered
  with the tokenizer's chat template, only the assistant's turns learnt.

Other fields (and a message's other keys) are ignored. In Parquet the shape's fields are columns: `text`, or
`prompt` and `completion` (strings), or `messages` (a list of structs with string `role` and `content`, as the
`datasets` library writes a list of dicts).

The upload check reads a file's first lines (or its footer) with them, the engine's reader every record; a
rule broken is a `RecordRejected` whose message names the line or row and says what to write.
"""

from typing import NamedTuple

import pyarrow as pa

from engine.plan.parquet_columns import is_string, shown_columns
from engine.plan.records import RecordRejected, check_has_records, json_object, shown

ROLES = ("system", "user", "assistant")
LEARNT_ROLE = "assistant"


class Message(NamedTuple):
    role: str
    content: str


class TextRecord(NamedTuple):
    text: str


class PromptRecord(NamedTuple):
    prompt: str
    completion: str


class ChatRecord(NamedTuple):
    messages: tuple[Message, ...]


LMRecord = TextRecord | PromptRecord | ChatRecord

# Each shape: the fields that make it, as a message names them, and a record of it.
SHAPES: dict[type, tuple[str, str]] = {
    TextRecord: ("`text`", '{"text": "a document"}'),
    PromptRecord: ("`prompt` and `completion`", '{"prompt": "2 + 2 =", "completion": " 4"}'),
    ChatRecord: (
        "`messages`",
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}',
    ),
}
FIELDS = {TextRecord: ("text",), PromptRecord: ("prompt", "completion"), ChatRecord: ("messages",)}
# Each shape by the name the service records for a dataset file (`details["records"]`).
SHAPE_NAMES = {TextRecord: "text", PromptRecord: "prompt_completion", ChatRecord: "messages"}
SHAPE_OF_FIELD = {field: shape for shape, fields in FIELDS.items() for field in fields}
ONE_SHAPE = "each record one of " + ", ".join(example for _fields, example in SHAPES.values())
ONE_OBJECT_PER_LINE = f"write one JSON object per line, {ONE_SHAPE}"


class LMRecordChecks:
    """The records of a file's lines, read in order: each line is a record or blank, the file has a record,
    and every record has the first one's shape."""

    def __init__(self, file: str = "The file"):
        self.file = file
        self.records = 0
        self.first: tuple[type, str] | None = None  # the first record's shape and where it is

    def read(self, line: bytes, number: int) -> LMRecord | None:
        """Line `number`'s record, or None if it is blank."""
        if not line.strip():
            return None
        return self.check(json_object(line, number, one_per_line=ONE_OBJECT_PER_LINE), f"line {number}")

    def check(self, value: dict, where: str) -> LMRecord:
        """The record of the object at `where` (`line 3`, `row 2`), which has the first record's shape."""
        record = parse_lm_record(value, where)
        self.records += 1
        if self.first is None:
            self.first = (type(record), where)
        elif type(record) is not self.first[0]:
            shape, first_where = self.first
            raise _rejected(
                where,
                f"has {SHAPES[type(record)][0]} but {first_where} has {SHAPES[shape][0]}: "
                f"give every record the same shape, {ONE_SHAPE}",
            )
        return record

    def finish(self, *, lines_read: int | None = None) -> None:
        """The rules across lines, once the lines are read (`lines_read`: only that many, from the first)."""
        check_has_records(self.file, self.records, lines_read=lines_read, one_per_line=ONE_OBJECT_PER_LINE)


def parse_lm_record(value: dict, where: str) -> LMRecord:
    """The record of the object at `where`, of the one shape its fields make."""
    shape = _shape(value, where)
    if shape is TextRecord:
        return TextRecord(_text(value, "text", where, "a text with nothing in it teaches nothing"))
    if shape is PromptRecord:
        for present, missing in (("prompt", "completion"), ("completion", "prompt")):
            if missing not in value:
                raise _rejected(
                    where,
                    f"has `{present}` but no `{missing}`: a prompt needs its completion, "
                    f"the text the model learns to write after it, like {SHAPES[PromptRecord][1]}",
                )
        completion = _text(
            value, "completion", where, "only the completion's tokens are learnt, so it would teach nothing"
        )
        return PromptRecord(_string(value, "prompt", where), completion)
    return ChatRecord(_messages(value.get("messages"), where))


def _shape(value: dict, where: str) -> type:
    shapes = {SHAPE_OF_FIELD[field] for field in value if field in SHAPE_OF_FIELD}
    if len(shapes) == 1:
        return shapes.pop()
    if not shapes:
        raise _rejected(where, f"has no `text`, `prompt` and `completion`, or `messages`: write {ONE_SHAPE}")
    found = " and ".join(fields for shape, (fields, _example) in SHAPES.items() if shape in shapes)
    raise _rejected(where, f"has {found}: write one shape a record, {ONE_SHAPE}")


def _rejected(where: str, says: str) -> RecordRejected:
    """`where` (`line 3`, `row 2`) at the start of a sentence that `says` what is wrong with it."""
    return RecordRejected(f"{where.capitalize()} {says}")


def _string(value: dict, field: str, where: str) -> str:
    text = value[field]
    if not isinstance(text, str):
        raise _rejected(where, f"has `{field}` {shown(text)}, not a string: write it as text")
    return text


def _text(value: dict, field: str, where: str, why: str) -> str:
    """A string field with something in it; `why`: why an empty one is refused."""
    text = _string(value, field, where)
    if not text.strip():
        raise _rejected(where, f"has an empty `{field}`: {why}; write it, or remove the record")
    return text


def _messages(messages: object, where: str) -> tuple[Message, ...]:
    example = SHAPES[ChatRecord][1]
    if not isinstance(messages, list):
        raise _rejected(
            where,
            f"has `messages` {shown(messages)}, not a list: write a list of "
            f'{{"role": ..., "content": ...}} objects, like {example}',
        )
    parsed = tuple(
        _message(message, f"{where}'s messages[{index}]") for index, message in enumerate(messages)
    )
    roles = [message.role for message in parsed]
    if LEARNT_ROLE not in roles:
        raise _rejected(
            where,
            f"has no {LEARNT_ROLE} message: only the {LEARNT_ROLE}'s turns are learnt, so "
            f"the conversation would teach nothing; give it one, like {example}, or remove the record",
        )
    if roles[0] == LEARNT_ROLE:
        raise _rejected(
            f"{where}'s messages[0]",
            f"is the {LEARNT_ROLE}'s: a conversation starts with a system or user message, which the "
            f"{LEARNT_ROLE}'s turns answer",
        )
    return parsed


def _message(message: object, where: str) -> Message:
    if not isinstance(message, dict):
        raise _rejected(where, f'is {shown(message)}, not an object: write {{"role": ..., "content": ...}}')
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        found = "no `role`" if role is None else f"`role` {shown(role)}"
        raise _rejected(where, f"has {found}: a message's role is one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        found = "no `content`" if content is None else f"`content` {shown(content)}"
        raise _rejected(where, f"has {found}: a message's content is a string")
    if role == LEARNT_ROLE and not content.strip():
        raise _rejected(
            where,
            f"is an empty {LEARNT_ROLE} message: its turn is what the model learns; "
            "write it, or remove the message",
        )
    return Message(role, content)


# --- Parquet ------------------------------------------------------------------------------------

LM_COLUMNS = (
    "a language model's Parquet dataset has one of: a `text` column; `prompt` and `completion` columns "
    "(strings); a `messages` column (lists of {role, content} structs, as the `datasets` library writes "
    "a list of dicts)"
)


def lm_columns(schema: pa.Schema) -> tuple[type, list[str]]:
    """The record shape of a Parquet file's columns, and the columns it reads."""
    types = {field.name: field.type for field in schema}
    present = [shape for shape, names in FIELDS.items() if any(name in types for name in names)]
    if len(present) > 1:
        found = " and ".join(SHAPES[shape][0] for shape in present)
        raise RecordRejected(f"The file has columns of more than one shape, {found}: keep one; {LM_COLUMNS}")
    if not present or not all(name in types for name in FIELDS[present[0]]):
        raise RecordRejected(f"The file's columns are {shown_columns(schema.names)}: {LM_COLUMNS}")
    shape = present[0]
    rule = _is_messages if shape is ChatRecord else is_string
    for name in FIELDS[shape]:
        if not rule(types[name]):
            raise RecordRejected(f"Column `{name}` holds {types[name]}: {LM_COLUMNS}")
    return shape, list(FIELDS[shape])


def _is_messages(data_type: pa.DataType) -> bool:
    if not (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)):
        return False
    message = data_type.value_type
    if not pa.types.is_struct(message):
        return False
    fields = {message.field(index).name: message.field(index).type for index in range(message.num_fields)}
    return all(name in fields and is_string(fields[name]) for name in ("role", "content"))
