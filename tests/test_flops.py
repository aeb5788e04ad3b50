"""forward_gflop counts the analytically known FLOPs of a linear layer and of convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deghost.training.flops import forward_gflop


def test_linear_counts_two_flops_per_multiply_add():
    # [5,64] @ [64,32]: 5·32 outputs of 64 multiply-adds; the bias is not counted
    assert forward_gflop(nn.Linear(64, 32), torch.randn(5, 64)) * 1e9 == pytest.approx(2 * 5 * 64 * 32)


@pytest.mark.parametrize("groups", [1, 2])
def test_convolution_counts_every_output_of_every_kernel_tap(groups):
    conv = nn.Conv2d(4, 8, kernel_size=3, padding=1, groups=groups)
    # batch 2, 8 output channels at 16×16, each 3·3·(4 / groups) multiply-adds
    expected = 2 * 2 * 8 * 16 * 16 * 3 * 3 * (4 // groups)
    assert forward_gflop(conv, torch.randn(2, 4, 16, 16)) * 1e9 == pytest.approx(expected)


def test_a_model_counts_the_sum_of_its_layers_and_activations_count_nothing():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert forward_gflop(model, torch.randn(5, 64)) * 1e9 == pytest.approx(2 * 5 * (64 * 32 + 32 * 10))
    assert forward_gflop(nn.ReLU(), torch.randn(5, 64)) == 0
