"""The service's objects as typed, read-only values. Nested parts the service may grow (a job's request,
progress and metrics) stay plain dicts; `raw` keeps the whole body."""

from dataclasses import dataclass, field, fields, replace
from typing import Self

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class _FromBody:
    @classmethod
    def of(cls, body: dict) -> Self:
        """The object from its JSON body: the fields it declares (`raw`: the body itself)."""
        values = {f.name: body.get(f.name) for f in fields(cls) if f.name != "raw"}
        return cls(**values, **({"raw": body} if "raw" in cls.__dataclass_fields__ else {}))


@dataclass(frozen=True)
class File(_FromBody):
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    format: str
    created_at: int
    model: dict | None  # an `hf` teacher's model: model_type, task, parameters, num_labels, labels, ...
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class Artifact(_FromBody):
    name: str
    bytes: int
    sha256: str
    content_type: str | None
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class Job(_FromBody):
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
        return replace(super().of(body), artifacts=[Artifact.of(a) for a in body.get("artifacts") or []])


@dataclass(frozen=True)
class Event(_FromBody):
    id: str
    created_at: int
    level: str
    message: str


@dataclass(frozen=True)
class MetricPoint(_FromBody):
    step: int
    epoch: int | None
    name: str
    value: float
