"""One job over several devices: the processes `torchrun` starts (ranks), each training a replica of the
students under DistributedDataParallel on its share of every batch.

Every rank runs the whole job's code: it loads the data and the frozen teachers (never wrapped), reads
the teachers' outputs for its samples, evaluates the validation set itself (the replicas are equal, so
every rank takes the same decisions), and steps with the others. Rank 0 alone reports, saves checkpoints
and exports; with one process (`ONE_PROCESS`) every method of `Ranks` is a no-op.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from engine.data.arrays import batch_indices, count_batches
from engine.plan.sizes import device_share

# Rank 0 fills the teacher cache while the others wait at a barrier: that may take long.
WAIT_LIMIT = timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the job's: rank `rank` of `size`, computing on `device` (None: the one
    process of a one-device job, which resolves its own)."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        """Whether this rank reports, saves checkpoints and exports."""
        return self.rank == 0

    def steps(self, num_samples: int, batch_size: int) -> int:
        """The steps of an epoch over `num_samples` with `batch_size` samples a step in all."""
        return count_batches(device_share(num_samples, self.size), device_share(batch_size, self.size))

    def batches(self, order: Tensor, batch_size: int, first: int = 0) -> Iterator[Tensor]:
        """This rank's samples of each step of the epoch in `order`, from step `first` on."""
        shard = self.shard(order)
        return batch_indices(len(shard), device_share(batch_size, self.size), shard, first)

    def shard(self, order: Tensor) -> Tensor:
        """Every `size`-th sample of the epoch's order from this rank's on, the order padded with its first
        samples to a multiple of `size` (as DistributedSampler does), so that every rank takes as many."""
        length = device_share(len(order), self.size) * self.size
        padded = order.repeat(device_share(length, len(order)))[:length]
        return padded[self.rank :: self.size]

    def parallel(self, module: nn.Module) -> nn.Module:
        """The module whose calls train it in step with the other ranks (gradients averaged over them)."""
        if self.size == 1 or not any(p.requires_grad for p in module.parameters()):
            return module
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    def mean(self, values: Tensor) -> Tensor:
        """The ranks' mean of `values` (each rank's batch means: equal batches make it the step's mean)."""
        if self.size == 1:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values / self.size

    def largest(self, value: int) -> int:
        """The largest of the ranks' `value`s: all of them then act on it together."""
        if self.size == 1:
            return value
        values = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return int(values.item())

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling the teacher cache), then the others (reading it)."""
        if not self.main:
            dist.barrier()
        yield
        if self.main and self.size > 1:
            dist.barrier()


ONE_PROCESS = Ranks()


def join_ranks(device: torch.device) -> Ranks:
    """This process's rank among those torchrun started (its environment says which), on `device`'s type:
    `cuda:<local rank>` with NCCL, or the CPU with gloo."""
    rank, size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=size, timeout=WAIT_LIMIT, device_id=device)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=size, timeout=WAIT_LIMIT)
    return Ranks(rank, size, device)


def leave_ranks() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class SilentReporter:
    """What a rank other than 0 reports: nothing. Rank 0's answer to `should_stop` reaches it through
    `Ranks.any` at every step."""

    def event(self, message: str, level: str = "info") -> None:
        pass

    def phase(self, phase: str) -> None:
        pass

    def progress(self, epoch: int, epochs: int, step: int, total_steps: int) -> None:
        pass

    def metrics(self, epoch: int, step: int, values: dict[str, float]) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False
