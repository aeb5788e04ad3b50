"""FLOPs of one forward pass, counted by torch.utils.flop_counter (the zoo self-check and the benchmarks)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_gflop(module: nn.Module, *inputs) -> float:
    """GFLOP (1e9) of `module(*inputs)` under inference mode; a multiply-add counts as 2 FLOPs.

    Convolutions are counted as direct convolutions, whatever algorithm a backend then uses.
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*inputs)
    return counter.get_total_flops() / 1e9
