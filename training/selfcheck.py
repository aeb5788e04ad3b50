"""Model-zoo self-check: build every network, count parameters, time a forward pass, count FLOPs.

Weights are random (seeded): the figures are about size and speed only, never about quality.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from deghost.presets import get_preset

from .flops import forward_gflop
from .models.zoo import BUILDERS, PAPER_PARAMETERS, build, count_parameters, example_inputs


@dataclass
class NetworkReport:
    name: str
    parameters: int
    expected_parameters: int | None  # the paper's count, for the ffhq1024 preset
    seconds: float  # median forward time, batch 1
    gflop: float | None

    @property
    def parameters_ok(self) -> bool:
        return self.expected_parameters is None or self.parameters == self.expected_parameters


def check_network(name: str, preset: str, repeats: int = 2, flops: bool = True, seed: int = 0) -> NetworkReport:
    model = build(name, preset, seed=seed)
    inputs = example_inputs(name, preset)
    with torch.inference_mode():
        model(*inputs)  # warm-up: first-call allocations and kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    gflop = forward_gflop(model, *inputs) if flops else None
    expected = PAPER_PARAMETERS.get(name) if get_preset(preset).name == "ffhq1024" else None
    return NetworkReport(name, count_parameters(model), expected, sorted(times)[len(times) // 2], gflop)


def run_selfcheck(preset: str, names: list[str] | None, repeats: int, flops: bool, echo=print) -> bool:
    """Print one line per network; True when every parameter count matches the paper."""
    echo(f"deghost model zoo, preset {preset}, {torch.get_num_threads()} threads "
         "(untrained weights: sizes and timings only)")
    echo(f"{'network':<14}{'parameters':>14}{'paper':>14}{'forward s':>11}{'GFLOP':>10}")
    all_ok = True
    for name in names or list(BUILDERS):
        report = check_network(name, preset, repeats, flops)
        all_ok &= report.parameters_ok
        paper = f"{report.expected_parameters:,}" if report.expected_parameters else "-"
        gflop = f"{report.gflop:.1f}" if report.gflop is not None else "-"
        flag = "" if report.parameters_ok else "  MISMATCH"
        echo(f"{name:<14}{report.parameters:>14,}{paper:>14}{report.seconds:>11.3f}{gflop:>10}{flag}")
    return all_ok
