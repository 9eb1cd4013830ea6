"""The rules of a text dataset's records: a JSON Lines file, one JSON object per line with a string `text`,
an optional string `text_pair` (a pair's second text) and an optional `label` (an integer class id, or a
label's name for a model whose config names its labels), blank lines skipped, and each optional field on
every record or on none.

The upload check reads a file's first lines with them, the engine's reader every line; a rule broken is
a `RecordRejected` whose message names the line and says what to do.
"""

import json
from typing import NamedTuple

RECORD_EXAMPLE = '{"text": "a sentence", "label": 0}'
ONE_OBJECT_PER_LINE = f"write one JSON object per line, like {RECORD_EXAMPLE}"
UTF8_BOM = b"\xef\xbb\xbf"


class RecordRejected(Exception):
    """A line is not a record, or the records break a rule together; the message says which and why."""


# A record's optional fields, each given on every record or on none: what to do when one is missing.
ALL_OR_NONE = {
    "label": "label every line, or none for an unlabeled dataset",
    "text_pair": "give every line a `text_pair` (the pair's second text), or none",
}


class Record(NamedTuple):
    text: str
    label: int | str | None
    text_pair: str | None = None


class RecordChecks:
    """The records of a file's lines, read in order: each line is a record or blank, the file has a record,
    and each optional field on all of them or on none."""

    def __init__(self, file: str = "The file"):
        self.file = file
        self.records = 0
        self.first_with: dict[str, int] = {}  # field -> the first line that has it
        self.first_without: dict[str, int] = {}

    def read(self, line: bytes, number: int) -> Record | None:
        """Line `number`'s record, or None if it is blank."""
        if not line.strip():
            return None
        record = parse_record(line, number)
        self.records += 1
        for field in ALL_OR_NONE:
            first = self.first_without if getattr(record, field) is None else self.first_with
            first.setdefault(field, number)
        return record

    def finish(self, *, lines_read: int | None = None) -> None:
        """The rules across lines, once the lines are read (`lines_read`: only that many, from the first)."""
        check_has_records(self.file, self.records, lines_read=lines_read)
        for field, fix in ALL_OR_NONE.items():
            if field in self.first_with and field in self.first_without:
                raise RecordRejected(
                    f"Line {self.first_without[field]} has no `{field}` but line {self.first_with[field]} "
                    f"has one: {fix}"
                )


def parse_record(line: bytes, number: int) -> Record:
    """The record of line `number`, which is not blank."""
    record = json_object(line, number)
    text = record.get("text")
    if not isinstance(text, str):
        found = "" if text is None else f" (its `text` is {shown(text)})"
        raise RecordRejected(
            f"Line {number} has no string `text`{found}: every line needs one, like {RECORD_EXAMPLE}"
        )
    text_pair = record.get("text_pair")
    if text_pair is not None and not isinstance(text_pair, str):
        raise RecordRejected(
            f"Line {number} has `text_pair` {shown(text_pair)}: a pair's second text must be a string"
        )
    label = record.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int | str)):
        raise RecordRejected(
            f"Line {number} has `label` {shown(label)}, not an integer class id: labels must be integer "
            "class ids (0, 1, ...) or label names (strings), or leave `label` out on every line for an "
            "unlabeled dataset"
        )
    return Record(text, label, text_pair)


def check_has_records(
    file: str, records: int, *, lines_read: int | None, one_per_line: str = ONE_OBJECT_PER_LINE
) -> None:
    """A file of `records` records (in its first `lines_read` lines, None: all) must have one."""
    if records == 0:
        where = "" if lines_read is None else f" in its first {lines_read} lines"
        raise RecordRejected(f"{file} has no records{where}: {one_per_line}")


def check_record_start(head: bytes, number: int, *, one_per_line: str = ONE_OBJECT_PER_LINE) -> None:
    """A line too long to read whole must at least open a JSON object."""
    if not head.lstrip().removeprefix(UTF8_BOM).startswith(b"{"):
        raise _not_an_object(number, one_per_line)


def json_object(line: bytes, number: int, *, one_per_line: str = ONE_OBJECT_PER_LINE) -> dict:
    """The JSON object of line `number`; `one_per_line`: what to write instead, for a line that is none."""
    try:
        value = json.loads(line.decode("utf-8-sig"))  # -sig: tolerate a byte-order mark on line 1
    except UnicodeDecodeError:
        raise RecordRejected(f"Line {number} is not UTF-8 text: save the file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise _not_json(number, f"{error.msg} at column {error.colno}", one_per_line) from None
    except ValueError:  # what json.loads raises besides a syntax error
        raise _not_json(number, "it holds an integer of more than 4,300 digits", one_per_line) from None
    except RecursionError:
        raise _not_json(number, "it is nested too deeply", one_per_line) from None
    if not isinstance(value, dict):
        raise _not_an_object(number, one_per_line, value)
    return value


def _not_json(number: int, reason: str, one_per_line: str) -> RecordRejected:
    return RecordRejected(f"Line {number} is not JSON ({reason}): {one_per_line}")


def _not_an_object(number: int, one_per_line: str, value: object = None) -> RecordRejected:
    found = "" if value is None else f" but {shown(value)}"
    return RecordRejected(f"Line {number} is not a JSON object{found}: {one_per_line}")


def shown(value: object) -> str:
    """A JSON value as its line has it, cut short."""
    return json.dumps(value)[:40]
