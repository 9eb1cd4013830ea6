"""The service's objects as typed, read-only values. Nested parts the service may grow (a job's request,
progress and metrics) stay plain dicts; `raw` keeps the whole body."""

from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class File:
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    format: str
    created_at: int
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def of(cls, body: dict) -> "File":
        return cls(**{name: body.get(name) for name in _fields(cls)}, raw=body)


@dataclass(frozen=True)
class Artifact:
    name: str
    bytes: int
    sha256: str
    content_type: str | None
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def of(cls, body: dict) -> "Artifact":
        return cls(**{name: body.get(name) for name in _fields(cls)}, raw=body)


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    name: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    request: dict
    progress: dict
    metrics: dict | None
    error: dict | None  # {"code", "message"} when it failed
    artifacts: list[Artifact]
    raw: dict = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, body: dict) -> "Job":
        values: dict[str, Any] = {name: body.get(name) for name in _fields(cls)}
        values["artifacts"] = [Artifact.of(a) for a in body.get("artifacts") or []]
        return cls(**values, raw=body)


@dataclass(frozen=True)
class Event:
    id: str
    created_at: int
    level: str
    message: str

    @classmethod
    def of(cls, body: dict) -> "Event":
        return cls(**{name: body.get(name) for name in _fields(cls)})


@dataclass(frozen=True)
class MetricPoint:
    step: int
    epoch: int | None
    name: str
    value: float

    @classmethod
    def of(cls, body: dict) -> "MetricPoint":
        return cls(**{name: body.get(name) for name in _fields(cls)})


def _fields(cls) -> list[str]:
    return [name for name in cls.__dataclass_fields__ if name != "raw"]
