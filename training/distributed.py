"""Data-parallel training under `torchrun --nproc-per-node N` (one process per GPU, or CPU processes).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them training runs
as a single process. NCCL joins GPU processes, gloo CPU ones. Only rank 0 writes checkpoints, logs
and samples.

N processes with batch b compute what one process computes with batch N·b (up to float rounding):
the data are interleaved (loop.batch_stream: process r holds rows r, r + N, … of the global batch),
per-sample random draws are made for the global batch from streams seeded by (seed, step) and each
process keeps its rows (`own_rows`; dropout masks too: `GlobalBatchDropout`), and BatchNorm
normalises with the statistics of the global batch (`wrap` converts it, `GlobalBatchNorm` on CPU
processes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
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


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun): known before the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0, the one process that writes files and reports (the same rule as `Context.is_main`)."""
    return launch_rank() == 0


def setup() -> Context:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launch_rank()
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
    """DDP around `model` when there are several processes (rank 0's weights are broadcast), its BatchNorm
    layers converted to global-batch statistics (`synchronise_batch_norm`); else `model`."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(synchronise_batch_norm(model, context), device_ids=device_ids)


def own_rows(values: torch.Tensor, context: Context, dim: int = 0) -> torch.Tensor:
    """This process's rows (along `dim`) of something drawn for the global batch: r, r + N, … (batch_stream's
    interleaving)."""
    return values[(slice(None),) * dim + (slice(context.rank, None, context.world_size),)]


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


# ---------------------------------------------------------------------------------------------------
# BatchNorm over the global batch


def synchronise_batch_norm(model: nn.Module, context: Context) -> nn.Module:
    """`model` with every BatchNorm computing its batch statistics over all processes' samples (in place;
    the same parameters and buffers, so optimizers and state_dicts are unaffected). GPUs use PyTorch's
    SyncBatchNorm; it refuses CPU tensors, so CPU processes use GlobalBatchNorm."""
    if not context.distributed:
        return model
    if context.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, _BatchNorm) and not isinstance(model, GlobalBatchNorm):
        return GlobalBatchNorm.replacing(model)
    for name, child in model.named_children():
        setattr(model, name, synchronise_batch_norm(child, context))
    return model


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every process's input gets the sum of all processes' output gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(gradient)
        return gradient


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any dimension) whose training-mode statistics are those of the samples of all processes:
    mean and (biased) variance from all-reduced per-channel sums, two passes; running_var gets the
    unbiased variance, with BatchNorm's momentum rule. Gradients flow through the reductions. In eval
    mode it is BatchNorm. Every process must call it equally often (as DDP's forward does)."""

    @classmethod
    def replacing(cls, norm: _BatchNorm) -> GlobalBatchNorm:
        """A GlobalBatchNorm holding `norm`'s parameters and buffers (the same tensors), in its mode."""
        converted = cls(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        for name, value in [*norm.named_parameters(recurse=False), *norm.named_buffers(recurse=False)]:
            setattr(converted, name, value)
        return converted.train(norm.training)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input [B,C,...], got {input.dim()}-D input")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not self.training and self.running_mean is not None:
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = (1, -1) + (1,) * (input.dim() - 2)
        channels = input.shape[1]
        local = torch.cat([input.sum(dims), input.new_full((1,), input.numel() / channels)])
        total = _SumOverProcesses.apply(local)
        count = total[channels:].detach()
        if count.item() <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        mean = total[:channels] / count
        centred = input - mean.view(shape)
        variance = _SumOverProcesses.apply(centred.square().sum(dims)) / count
        if self.training and self.track_running_stats:
            self._update_running_statistics(mean.detach(), variance.detach(), count)
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        return output * self.weight.view(shape) + self.bias.view(shape) if self.affine else output

    @torch.no_grad()
    def _update_running_statistics(self, mean: torch.Tensor, variance: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(variance * count / (count - 1), factor)


# ---------------------------------------------------------------------------------------------------
# Dropout masks drawn for the global batch


def draw_dropout_per_sample(model: nn.Module, context: Context) -> nn.Module:
    """`model` (in place) with every Dropout / Dropout2d a GlobalBatchDropout: in training its masks come
    from the stream `set_dropout_stream` gives it, not from the global generator, in any process count."""
    for name, child in model.named_children():
        if isinstance(child, (nn.Dropout, nn.Dropout2d)):
            replacement = GlobalBatchDropout(child.p, isinstance(child, nn.Dropout2d), context)
            setattr(model, name, replacement.train(child.training))
        else:
            draw_dropout_per_sample(child, context)
    return model


def set_dropout_stream(model: nn.Module, stream: torch.Generator) -> None:
    """The stream every GlobalBatchDropout of `model` draws its next masks from (one per step: loop.step_stream)."""
    for module in model.modules():
        if isinstance(module, GlobalBatchDropout):
            module.stream = stream


class GlobalBatchDropout(nn.Module):
    """Dropout (elements) or, `channels`, Dropout2d (whole channels of a sample) whose keep-masks are drawn for
    the global batch from `stream`, each process keeping its rows: a sample's mask depends on its place in the
    global batch alone. Every process draws the whole mask, in the same order of calls. Identity in eval mode."""

    def __init__(self, p: float, channels: bool, context: Context):
        super().__init__()
        self.p, self.channels, self.context = p, channels, context
        self.stream: torch.Generator | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return input
        if self.stream is None:
            raise RuntimeError("GlobalBatchDropout draws from the step's stream: call set_dropout_stream first")
        batch = input.shape[0] * self.context.world_size
        shape = (batch, input.shape[1], *[1] * (input.dim() - 2)) if self.channels else (batch, *input.shape[1:])
        keep = own_rows(torch.rand(shape, generator=self.stream) >= self.p, self.context)
        return input * keep.to(input.device, input.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, channels={self.channels}"
