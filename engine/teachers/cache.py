"""The teacher-output cache. Without augmentation a frozen teacher gives the same outputs for a sample in
every epoch, so each teacher's logits and tapped layers over the training and validation sets are computed
once (`cache_tables`) and read back by position in every epoch, every trial of an `auto` search, every
generation and every peer: the same values the teacher would compute, at the cost of a lookup. A causal
language model's teacher is kept the same way, in its top-k form (`lm_cache`).

A `TeacherCacheStore` (the worker's: the storage, per tenant) keeps the tables for later jobs. An entry is
one teacher's table over one dataset, named by the hash of everything its values depend on (`entry_key`).
"""

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from engine.checks import teacher_rejections
from engine.data.arrays import ArrayDataset
from engine.data.datasets import text_tokenizer
from engine.losses.features import sample_shapes
from engine.plan.errors import JobCancelled
from engine.plan.sizes import planned_epochs
from engine.plan.specs import EngineJob, JobFiles
from engine.reporting import Reporter
from engine.runtime.compute import Precision
from engine.runtime.devices import fits_on_gpu
from engine.teachers.cache_tables import TeacherTable, TornTable, read_table, write_table
from engine.teachers.ensemble import TeacherBatch, TeacherEnsemble

CACHE_FORMAT = 1  # bump when a table's layout or what goes into its key changes
CACHE_FOLDER = "teacher-cache"  # in a job's output folder: the tables it computes, for its run only
PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}  # None: as computed
LOGITS = "logits"
LAYER = "layer:"  # a tapped layer's tensor is named by its path after this, apart from the logits


class TeacherCacheStore(Protocol):
    """Where tables are kept between jobs (the worker: its storage, by tenant, within a size budget)."""

    def fetch(self, key: str) -> Path | None: ...  # a local folder holding the entry, or None

    def save(self, key: str, folder: Path) -> str | None: ...  # keep the folder's table: None, or why not


class CachedTeachers:
    """The ensemble's batches read from its tables instead of computed: the same draws, the same values."""

    def __init__(self, ensemble: TeacherEnsemble, tables: list[TeacherTable], device: torch.device):
        self.ensemble, self.tables, self.device = ensemble, tables, device

    def __call__(self, index: slice | Tensor, generator: torch.Generator | None = None) -> TeacherBatch:
        drawn = self.ensemble.draw(generator)
        rows = [table.rows(index, self.device) for table in self.tables]
        logits = {teacher: values.pop(LOGITS) for teacher, values in enumerate(rows)}
        layers = [{name.removeprefix(LAYER): value for name, value in values.items()} for values in rows]
        return TeacherBatch(self.ensemble.combine(logits, drawn), layers)

    def log_probabilities(self, batch_size: int) -> Tensor:
        """The ensemble's log-probabilities at T = 1 over every row, as `TeacherEnsemble.predict` gives."""

        def logits(start: int, end: int) -> list[Tensor]:
            return [table.tensors[LOGITS][start:end].to(self.device) for table in self.tables]

        return self.ensemble.log_probabilities(logits, len(self.tables[0]), batch_size)


def same_outputs(first: tuple[Tensor, dict], again: tuple[Tensor, dict]) -> bool:
    (logits, layers), (logits_again, layers_again) = first, again
    return torch.equal(logits, logits_again) and all(
        torch.equal(value, layers_again[path]) for path, value in layers.items()
    )


def stored_bytes(outputs: tuple[Tensor, dict[str, Tensor]], precision: str) -> int:
    """What a batch's logits and layers take in a table whose layers are kept in `precision`."""
    logits, layers = outputs
    layer_dtype = PRECISIONS[precision]

    def itemsize(value: Tensor) -> int:
        return layer_dtype.itemsize if layer_dtype and value.is_floating_point() else value.element_size()

    return logits.numel() * 4 + sum(value.numel() * itemsize(value) for value in layers.values())


def disk_space(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


@dataclasses.dataclass
class PartUse:
    """How one dataset's tables were got: read from the store, or computed (and kept, or why not)."""

    part: str
    samples: int
    passes: int  # how many times the job would run its teachers over the dataset without the cache
    unit: str = "samples"  # what a row is, in the events
    hits: int = 0
    misses: int = 0
    bytes: int = 0
    seconds: float = 0.0  # spent here: computing the misses, opening the hits
    compute_seconds: float = 0.0  # what computing them all took (for hits: when they were computed)
    not_kept: str | None = None


@dataclasses.dataclass(frozen=True)
class TableEntry:
    """A table a job reads: its key, the tensors it holds, and how to compute it into a folder."""

    key: str
    names: tuple[str, ...]
    write: Callable[[Path], None]


class TeacherCache:
    """One job's use of the cache: each teacher's table over each dataset, from the store if an earlier job
    kept it, else computed once into `folder` (and offered to the store); and what that cost and saved."""

    def __init__(
        self,
        job: EngineJob,
        files: JobFiles,
        store: TeacherCacheStore | None,
        folder: Path,
        precision: Precision,
        reporter: Reporter,
    ):
        self.job, self.files, self.store, self.folder = job, files, store, folder
        self.precision, self.device, self.reporter = precision, precision.device, reporter
        self.uses: list[PartUse] = []
        self._digests = dict(files.digests)
        self.used, self.reason = False, None

    def decide(self, reason: str | None) -> None:
        """Whether the job reads its teachers' outputs from tables (`used`), or why not (`reason`: see
        `bypass_reason` and `lm_cache.bypass_reason`)."""
        self.reason, self.used = reason, reason is None
        if reason is not None:
            self.reporter.event(
                f"Teacher outputs are not cached ({reason}): the teachers run on every batch."
            )

    def switched_off(self) -> str | None:
        """Why not, where the request says so."""
        return "distillation.teacher_cache is off" if self.job.distillation.teacher_cache == "off" else None

    def room(self, needed: int) -> str | None:
        """Why not, where the job's tables, `needed` bytes, would not fit on the disk."""
        free = disk_space(self.folder)
        if needed > free:
            return f"the teacher outputs would take {needed / 1e9:,.2f} GB; {free / 1e9:,.2f} GB are free"
        return None

    def bypass_reason(
        self, ensemble: TeacherEnsemble, train: ArrayDataset, validation: ArrayDataset
    ) -> str | None:
        """Why a classifier's teachers must run on every batch of this job, or None if their outputs can be
        cached."""
        if off := self.switched_off():
            return off
        augmentation = self.job.training.augmentation
        if augmentation.shift or augmentation.flip:
            return "training.augmentation changes the teachers' inputs at every step"
        probe = train.x[: self.job.training.batch_size].to(self.device)
        sample_bytes = 0
        for index in range(len(ensemble)):
            with teacher_rejections(probe):
                outputs, again = ensemble.run_one(index, probe), ensemble.run_one(index, probe)
            if not same_outputs(outputs, again):
                return (
                    f"teacher {index} gives different outputs for the same batch (a pt2 program exported in "
                    "training mode keeps its dropout on: export it from model.eval())"
                )
            sample_bytes += stored_bytes(outputs, self.job.distillation.teacher_cache_precision) // len(probe)
        return self.room(sample_bytes * (len(train) + len(validation)))

    def arithmetic(self, part: str) -> str:
        """Where and in what precision a part's teacher outputs are computed: each rounds its own way."""
        return f"{self.device.type}:{self.precision.name if part == 'train' else 'fp32'}"

    def autocast(self, part: str) -> contextlib.AbstractContextManager:
        """The teachers run on the training set as in the training steps, on the validation set in float32."""
        return self.precision.autocast() if part == "train" else contextlib.nullcontext()

    def sha256(self, path: Path) -> str:
        """A file's sha256; a folder's (an `hf` teacher's) over its files' names and digests."""
        if path not in self._digests:
            if path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.is_file())
                listing = "".join(f"{p.relative_to(path)}\0{self.sha256(p)}\n" for p in files)
                self._digests[path] = hashlib.sha256(listing.encode()).hexdigest()
            else:
                with path.open("rb") as stream:
                    self._digests[path] = hashlib.file_digest(stream, "sha256").hexdigest()
        return self._digests[path]

    def teachers(self, ensemble: TeacherEnsemble, part: str, dataset: ArrayDataset) -> CachedTeachers:
        """The ensemble's outputs over `dataset` (`part`: "train" or "validation"), from its tables."""
        passes = teacher_passes(self.job) if part == "train" else 1
        precision = self.job.distillation.teacher_cache_precision
        entries = []
        for index in range(len(ensemble)):
            key = entry_key(
                self.job,
                self.files,
                self.sha256,
                teacher=index,
                part=part,
                inputs=dataset.x,
                layers=ensemble.layer_paths[index],
                arithmetic=self.arithmetic(part),
            )
            write = partial(self._write, ensemble, index, dataset, part, precision)
            entries.append(TableEntry(key, (LOGITS,), write))
        tables = self.tables(PartUse(part, len(dataset), passes), entries)
        return CachedTeachers(ensemble, tables, self.device)

    def tables(self, use: PartUse, entries: Sequence[TableEntry]) -> list[TeacherTable]:
        """The entries' tables over the dataset of `use`: each from the store if an earlier job kept it, else
        computed once (and offered to the store); on the device where they fit."""
        tables = [self._stored(entry, use) or self._computed(entry, use) for entry in entries]
        self.uses.append(use)
        self.reporter.event(use_summary(use))
        return placed(tables, self.device)

    def private_teachers(self, ensemble: TeacherEnsemble, dataset: ArrayDataset, name: str) -> CachedTeachers:
        """Tables of teachers made during the job (a born-again generation) over the training set, kept for
        this job only."""
        tables = []
        for index in range(len(ensemble)):
            folder = self.folder / f"{name}-{index}"
            self._write(ensemble, index, dataset, "train", "float32", folder)
            tables.append(read_table(folder, (LOGITS,)))
        return CachedTeachers(ensemble, placed(tables, self.device), self.device)

    def _stored(self, entry: TableEntry, use: PartUse) -> TeacherTable | None:
        if self.store is None:
            return None
        started = time.perf_counter()
        folder = self.store.fetch(entry.key)
        if folder is None:
            return None
        try:
            table = read_table(folder, entry.names)
        except TornTable as error:
            self.reporter.event(
                f"A cached teacher table could not be read ({error}): it is computed again.", "warning"
            )
            return None
        use.hits += 1
        use.bytes += table.nbytes
        use.seconds += time.perf_counter() - started
        use.compute_seconds += table.seconds
        return table

    def _computed(self, entry: TableEntry, use: PartUse) -> TeacherTable:
        folder = self.folder / entry.key
        shutil.rmtree(folder, ignore_errors=True)
        entry.write(folder)
        table = read_table(folder, entry.names)
        use.misses += 1
        use.bytes += table.nbytes
        use.seconds += table.seconds
        use.compute_seconds += table.seconds
        if self.store is not None:
            use.not_kept = self._keep(entry.key, folder) or use.not_kept
        return table

    def _keep(self, key: str, folder: Path) -> str | None:
        """Offer the table to the store: None if kept, else why not. A failing store costs the later jobs'
        time, not this job."""
        try:
            return self.store.save(key, folder)
        except Exception as error:
            self.reporter.event(
                f"The teacher outputs could not be kept ({error}): this job goes on.", "warning"
            )
            return f"the store failed: {error}"

    def _write(
        self,
        ensemble: TeacherEnsemble,
        index: int,
        dataset: ArrayDataset,
        part: str,
        precision: str,
        folder: Path,
    ) -> None:
        """The table of teacher `index` over `dataset`, computed as the teacher runs on `part`, its layers
        stored in `precision`."""
        layer_dtype = PRECISIONS[precision]

        def outputs(rows: slice) -> dict[str, Tensor]:
            x = dataset.x[rows].to(self.device)
            with teacher_rejections(x), self.autocast(part):
                logits, layers = ensemble.run_one(index, x)
            sample_shapes(layers, "teacher")  # each tapped layer gives one tensor
            stored = {LAYER + path: as_stored(value, layer_dtype) for path, value in layers.items()}
            return {LOGITS: logits} | stored

        write_table(folder, outputs, len(dataset), self.job.training.batch_size, self.tick)

    def tick(self) -> None:
        if self.reporter.should_stop():
            raise JobCancelled("stopped while computing the teacher outputs")

    def summary(self) -> dict:
        """`metrics.teacher_cache`: hit, miss or mixed; bytes; seconds spent, and about how many saved."""
        if not self.used:
            return {
                "status": "off" if self.job.distillation.teacher_cache == "off" else "bypassed",
                "reason": self.reason,
            }
        hits, misses = sum(u.hits for u in self.uses), sum(u.misses for u in self.uses)
        status = "hit" if not misses else "miss" if not hits else "mixed"
        spent = sum(u.seconds for u in self.uses)
        summary = {
            "status": status,
            "entries": hits + misses,
            "bytes": sum(u.bytes for u in self.uses),
            "seconds": round(spent, 3),
            "saved_seconds": round(self.uncached_seconds() - spent, 3),
        }
        not_kept = [u.not_kept for u in self.uses if u.not_kept]
        return summary | ({"not_kept": not_kept[0]} if not_kept else {})

    def uncached_seconds(self) -> float:
        """About what the job's teachers would have spent without the cache: each dataset's passes."""
        return sum(use.passes * use.compute_seconds for use in self.uses)


def teacher_passes(job: EngineJob) -> int:
    """Epochs that learn from the job's own teachers: all but later generations' (students teach those)."""
    later_generations = job.distillation.generations - 1 if job.distillation.method == "born_again" else 0
    return planned_epochs(job) - later_generations * job.training.epochs


def as_stored(value: Tensor, dtype: torch.dtype | None) -> Tensor:
    return value.to(dtype) if dtype is not None and value.is_floating_point() else value


def use_summary(use: PartUse) -> str:
    part = "training" if use.part == "train" else "validation"
    what = f"Teacher outputs over the {use.samples:,} {part} {use.unit}"
    size = f"{use.bytes / 1e6:,.1f} MB"
    if not use.misses:
        return f"{what}: read from the cache ({size}; computing them took {use.compute_seconds:.1f} s)."
    kept = f", not kept: {use.not_kept}" if use.not_kept else ", kept in the cache for later jobs"
    hits = f" ({use.hits} of {use.hits + use.misses} tables read from the cache)" if use.hits else ""
    return f"{what}: computed once in {use.seconds:.1f} s{hits} ({size}{kept}); every epoch reads them."


def placed(tables: list[TeacherTable], device: torch.device) -> list[TeacherTable]:
    """On a GPU, the tables move to it when they fit; otherwise each step copies its rows there."""
    if not fits_on_gpu(sum(table.nbytes for table in tables), device):
        return tables
    return [table.to(device) for table in tables]


def entry_key(
    job: EngineJob,
    files: JobFiles,
    sha256: Callable[[Path], str],
    *,
    teacher: int,
    part: str,
    inputs: Tensor,
    layers: list[str],
    arithmetic: str,
    tokens: dict | None = None,
) -> str:
    """The hash of everything a teacher's table over a dataset depends on: the teacher (its file, format,
    architecture), the layers read, how they are stored, the data (its files, how text is tokenized, which
    rows, the teacher's `inputs`' shape), and the code and device that compute it; `tokens`, a causal language
    model's top-k table's own (`lm_cache.token_key`)."""
    source, student = job.teachers[teacher], job.student_architecture
    holdout = None if files.validation is not None else [job.training.validation_fraction, job.training.seed]
    # Every teacher reads the ids of one tokenizer, the first `hf` teacher's where there is one.
    tokenizer = text_tokenizer(job, files)
    material = {
        "format": CACHE_FORMAT,
        "torch": torch.__version__,
        "arithmetic": arithmetic,
        "teacher": {
            "sha256": sha256(files.teachers[teacher]),
            "format": source.format,
            "architecture": None if source.architecture is None else source.architecture.model_dump(),
        },
        "layers": sorted(layers),
        "precision": job.distillation.teacher_cache_precision if layers else "float32",
        "data": {
            "sha256": sha256(files.validation if part == "validation" and holdout is None else files.train),
            "part": part,
            "holdout": holdout,
            "tokenizer": None if tokenizer is None else sha256(tokenizer),
            "max_length": getattr(student, "max_length", None),
            "shape": list(inputs.shape),
            "dtype": str(inputs.dtype),
        },
    }
    if tokens is not None:  # a classifier's key reads as it always did
        material["tokens"] = tokens
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
