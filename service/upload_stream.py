"""`POST /v1/files`'s form, read as its body arrives: the bytes of the `file` part go straight into
storage (written and hashed on a thread, `threaded_write`), never whole in memory nor spooled to a
temporary file first; `purpose` is kept. Once the body has ended the fields are checked as FastAPI
checked its form before: `file` and `purpose` are required, a field sent twice keeps its last value,
other fields are ignored, and the errors are FastAPI's (a `RequestValidationError` naming the field, or
a 400 `HTTPException` for a body that is not a multipart form: the app answers both 422).
"""

from dataclasses import dataclass
from functools import partial

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from core.storage import Storage, StoredObject
from service import multipart
from service.multipart import Field, FileData, FileEnd, FileStart
from service.schemas import Purpose
from service.threaded_write import ThreadedWrite

PURPOSE = TypeAdapter(Purpose)
MISSING = object()
TEXT = object()  # `file` sent as a text field
FILE_PART = object()  # `purpose` sent as a file


@dataclass(frozen=True)
class Upload:
    purpose: str
    filename: str  # as the client sent it
    stored: StoredObject


async def receive_upload(request: Request, storage: Storage, key: str, max_bytes: int) -> Upload:
    """The form of `request`, its file stored under `key`; raises `TooLarge` past `max_bytes`. Whatever
    goes wrong, nothing stays under `key`."""
    try:
        form = _Form(storage, key, max_bytes)
        await _read(request, form)
        return form.checked()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(storage.delete, key)  # a file part stored before the failure
        raise


async def _read(request: Request, form: "_Form") -> None:
    try:
        options = multipart.form_data_options(request.headers.get("content-type"))
        if options is None:  # not multipart/form-data: no fields, as FastAPI read none
            return
        reader = multipart.FormReader(*options)
        async for chunk in request.stream():
            for event in reader.feed(chunk):
                await form.take(event)
    except multipart.MultipartError as exc:
        raise HTTPException(400, str(exc)) from None
    except ClientDisconnect:
        raise HTTPException(400, "The client disconnected before the body ended.") from None
    finally:
        await form.drop_unfinished_file()  # the body ended (or failed) inside the `file` part


class _Form:
    """What the body said so far. Each `file` part is stored under the key as it arrives: a later one
    replaces it, as a later field replaces an earlier one."""

    def __init__(self, storage: Storage, key: str, max_bytes: int):
        self._write = partial(storage.write, key, max_bytes=max_bytes)
        self.purpose: object = MISSING
        self.file: object = MISSING  # or TEXT, or (filename, StoredObject)
        self._writing: tuple[str, ThreadedWrite[StoredObject]] | None = None

    async def take(self, event: multipart.Event) -> None:
        if isinstance(event, FileData):
            if self._writing is not None:
                await self._writing[1].add(event.data)
        elif isinstance(event, FileStart):
            if event.name == "file":
                self._writing = (event.filename, ThreadedWrite(self._write))
            elif event.name == "purpose":
                self.purpose = FILE_PART
        elif isinstance(event, FileEnd):
            if self._writing is not None:
                filename, writer = self._writing
                self._writing = None
                self.file = (filename, await writer.finish())
        elif isinstance(event, Field):
            if event.name == "file":
                self.file = TEXT
            elif event.name == "purpose":
                self.purpose = event.value

    async def drop_unfinished_file(self) -> None:
        if self._writing is not None:
            writer, self._writing = self._writing[1], None
            await writer.abort()

    def checked(self) -> Upload:
        errors = [*self._file_errors(), *self._purpose_errors()]
        if errors:
            raise RequestValidationError(errors)
        filename, stored = self.file
        return Upload(self.purpose, filename, stored)

    def _file_errors(self) -> list[dict]:
        if self.file is MISSING:
            return [_missing("file")]
        if self.file is TEXT:
            message = "Expected UploadFile, received: <class 'str'>"
            return [{"type": "value_error", "loc": ("body", "file"), "input": None, "msg": message}]
        return []

    def _purpose_errors(self) -> list[dict]:
        if self.purpose is MISSING:
            return [_missing("purpose")]
        try:
            PURPOSE.validate_python(self.purpose)
        except ValidationError as exc:
            return [{**error, "loc": ("body", "purpose", *error["loc"])} for error in exc.errors()]
        return []


def _missing(name: str) -> dict:
    return {"type": "missing", "loc": ("body", name), "msg": "Field required", "input": None}
