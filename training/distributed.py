"""Data-parallel training under `torchrun --nproc-per-node N` (one process per GPU, or CPU processes).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them training runs
as a single process. NCCL joins GPU processes, gloo CPU ones. Only rank 0 writes checkpoints, logs
and samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup() -> Context:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; start torchrun "
                "with --nproc-per-node at most the GPU count"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, device)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def run(train: Callable[..., T], *args) -> T:
    """`train(*args, context)` inside the process group torchrun describes (left again however it ends):
    the entry of every recipe."""
    context = setup()
    try:
        return train(*args, context)
    finally:
        teardown(context)


def wrap(model: nn.Module, context: Context) -> nn.Module:
    """DDP around `model` when there are several processes (rank 0's weights are broadcast), else `model`."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_over_processes(values: torch.Tensor, context: Context) -> torch.Tensor:
    """The average of `values` over all processes (the same tensor on every one)."""
    if not context.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / context.world_size


def gather_objects(value: object, context: Context) -> list:
    """`value` of every process, in rank order (e.g. RNG states for a checkpoint)."""
    if not context.distributed:
        return [value]
    gathered: list = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
