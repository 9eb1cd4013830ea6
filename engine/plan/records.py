"""The rules of a text dataset's records: a JSON Lines file, one JSON object per line with a string `text`
and an optional integer `label` (a class id), blank lines skipped, and a `label` on every record or on none.

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


class Record(NamedTuple):
    text: str
    label: int | None


class RecordChecks:
    """The records of a file's lines, read in order: each line is a record or blank, the file has a record,
    and a `label` on all of them or on none."""

    def __init__(self, file: str = "The file"):
        self.file = file
        self.records = 0
        self.first_labeled: int | None = None
        self.first_unlabeled: int | None = None

    def read(self, line: bytes, number: int) -> Record | None:
        """Line `number`'s record, or None if it is blank."""
        if not line.strip():
            return None
        record = parse_record(line, number)
        self.records += 1
        if record.label is None:
            self.first_unlabeled = self.first_unlabeled or number
        else:
            self.first_labeled = self.first_labeled or number
        return record

    def finish(self, *, lines_read: int | None = None) -> None:
        """The rules across lines, once the lines are read (`lines_read`: only that many, from the first)."""
        if self.records == 0:
            where = "" if lines_read is None else f" in its first {lines_read} lines"
            raise RecordRejected(f"{self.file} has no records{where}: {ONE_OBJECT_PER_LINE}")
        if self.first_labeled is not None and self.first_unlabeled is not None:
            raise RecordRejected(
                f"Line {self.first_unlabeled} has no `label` but line {self.first_labeled} has one: "
                "label every line, or none for an unlabeled dataset"
            )


def parse_record(line: bytes, number: int) -> Record:
    """The record of line `number`, which is not blank."""
    record = _json_object(line, number)
    text = record.get("text")
    if not isinstance(text, str):
        found = "" if text is None else f" (its `text` is {_shown(text)})"
        raise RecordRejected(
            f"Line {number} has no string `text`{found}: every line needs one, like {RECORD_EXAMPLE}"
        )
    label = record.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise RecordRejected(
            f"Line {number} has `label` {_shown(label)}, not an integer class id: labels must be integer "
            "class ids (0, 1, ...), or leave `label` out on every line for an unlabeled dataset"
        )
    return Record(text, label)


def check_record_start(head: bytes, number: int) -> None:
    """A line too long to read whole must at least open a JSON object."""
    if not head.lstrip().removeprefix(UTF8_BOM).startswith(b"{"):
        raise _not_an_object(number)


def _json_object(line: bytes, number: int) -> dict:
    try:
        value = json.loads(line.decode("utf-8-sig"))  # -sig: tolerate a byte-order mark on line 1
    except UnicodeDecodeError:
        raise RecordRejected(f"Line {number} is not UTF-8 text: save the file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise _not_json(number, f"{error.msg} at column {error.colno}") from None
    except ValueError:  # what json.loads raises besides a syntax error
        raise _not_json(number, "it holds an integer of more than 4,300 digits") from None
    except RecursionError:
        raise _not_json(number, "it is nested too deeply") from None
    if not isinstance(value, dict):
        raise _not_an_object(number, value)
    return value


def _not_json(number: int, reason: str) -> RecordRejected:
    return RecordRejected(f"Line {number} is not JSON ({reason}): {ONE_OBJECT_PER_LINE}")


def _not_an_object(number: int, value: object = None) -> RecordRejected:
    found = "" if value is None else f" but {_shown(value)}"
    return RecordRejected(f"Line {number} is not a JSON object{found}: {ONE_OBJECT_PER_LINE}")


def _shown(value: object) -> str:
    """A JSON value as its line has it, cut short."""
    return json.dumps(value)[:40]
